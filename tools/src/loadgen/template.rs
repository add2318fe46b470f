//! The call-data templates: a small, ghz-compatible subset of Go's `text/template`.
//!
//! Data and metadata are JSON text; every `{{ … }}` action in it is replaced per request
//! before the JSON is parsed. Supported actions:
//!
//! | action | gives | in ghz |
//! | --- | --- | --- |
//! | `{{.RequestNumber}}` | the request's number, from 0, unique in the run | yes |
//! | `{{.WorkerID}}` | the worker (concurrent client) that sends it, `w<n>` | yes |
//! | `{{.UserId}}` | `user-<RequestNumber>`: one new user per request | loadgen only |
//! | `{{.UUID}}` / `{{newUUID}}` | a random UUID v4 | yes |
//! | `{{.Timestamp}}` / `{{.TimestampUnix}}` / `{{.TimestampUnixMilli}}` / `{{.TimestampUnixNano}}` | now (RFC 3339 / unix s / ms / ns) | yes |
//! | `{{.FullyQualifiedName}}` / `{{.MethodName}}` / `{{.ServiceName}}` / `{{.InputName}}` / `{{.OutputName}}` | the call | yes |
//! | `{{randomInt MIN MAX}}` | a random integer, `MIN <= n < MAX` | yes |
//! | `{{randomString N}}` | `N` random letters and digits | yes |
//! | `{{add A B}}` | `A + B` (each an integer or a field, e.g. `{{add .RequestNumber 1}}`) | sprig |
//! | `{{randomSeat "Z" R1 R2 N1 N2}}` | seat id `Z-<row>-<number>`, row in `R1..=R2`, number in `N1..=N2` | loadgen only |
//! | `{{uniqueSeat "Z" PER_ROW}}` | the `RequestNumber`-th seat of zone `Z` with `PER_ROW` seats a row, `Z-<row>-<number>` from `Z-1-1` | loadgen only |
//! | `{{token .UserId}}` / `{{token "alice"}}` | a token (JWT) of the stack's identity provider for that user, minted once per user and reused: `"authorization": "Bearer {{token .UserId}}"` | loadgen only |
//!
//! Seat ids follow the mesh's `<zone>-<row>-<number>` with numeric row labels, as the bench's
//! venues have. Anything else in `{{ }}` is an error when the template is parsed, so a typo
//! fails before the load starts.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use rand::Rng;

/// What one request's templates may refer to.
#[derive(Debug, Clone, Default)]
pub struct CallContext<'a> {
    pub request_number: u64,
    pub worker_id: usize,
    /// `package.Service.Method`.
    pub fully_qualified_name: &'a str,
    pub method_name: &'a str,
    pub service_name: &'a str,
    pub input_name: &'a str,
    pub output_name: &'a str,
    /// Mints `{{token …}}`; without it the action renders nothing (and the call is refused).
    pub identity: Option<&'a crate::identity::Identity>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Int(i64),
    Str(String),
    Field(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
    Call(String, Vec<Arg>),
}

/// A parsed template; [`Template::render`] fills it for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

const FIELDS: [&str; 14] = [
    "RequestNumber",
    "WorkerID",
    "UserId",
    "UUID",
    "Timestamp",
    "TimestampUnix",
    "TimestampUnixMilli",
    "TimestampUnixNano",
    "FullyQualifiedName",
    "MethodName",
    "ServiceName",
    "InputName",
    "OutputName",
    "IsClientStreaming",
];

/// Splits an action's words, keeping quoted strings whole.
fn words(action: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = action.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut word = String::from("\"");
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => word.push(c),
                    None => bail!("unterminated string in {{{{{action}}}}}"),
                }
            }
            out.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            out.push(word);
        }
    }
    Ok(out)
}

fn arg(word: &str) -> anyhow::Result<Arg> {
    if let Some(text) = word.strip_prefix('"') {
        return Ok(Arg::Str(text.to_owned()));
    }
    if let Some(field) = word.strip_prefix('.') {
        if !FIELDS.contains(&field) {
            bail!("unknown field .{field}");
        }
        return Ok(Arg::Field(field.to_owned()));
    }
    word.parse::<i64>().map(Arg::Int).with_context(|| format!("bad argument {word:?}"))
}

fn check_call(name: &str, args: &[Arg]) -> anyhow::Result<()> {
    let ints = |n: usize| args.len() == n && args.iter().all(|a| !matches!(a, Arg::Str(_)));
    let ok = match name {
        "newUUID" => args.is_empty(),
        "randomInt" | "add" => ints(2),
        "randomString" => ints(1),
        "randomSeat" => {
            args.len() == 5
                && matches!(args[0], Arg::Str(_))
                && args[1..].iter().all(|a| !matches!(a, Arg::Str(_)))
        }
        "uniqueSeat" => args.len() == 2 && matches!(args[0], Arg::Str(_)) && !matches!(args[1], Arg::Str(_)),
        "token" => args.len() == 1 && !matches!(args[0], Arg::Int(_)),
        _ => bail!("unknown template function {name}"),
    };
    if !ok {
        bail!("wrong arguments for {name}: {args:?}");
    }
    Ok(())
}

impl Template {
    /// Parses `text`; fails on an unknown field or function or bad arguments.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").with_context(|| format!("unclosed {{{{ in {text:?}"))?;
            let action = after[..end].trim().trim_start_matches('-').trim_end_matches('-').trim();
            // Inside JSON text a template's quotes arrive escaped: `{{randomSeat \"A\" …}}`.
            let words = words(&action.replace("\\\"", "\""))?;
            match words.as_slice() {
                [] => bail!("empty {{{{}}}} in {text:?}"),
                [single] if single.starts_with('.') => match arg(single)? {
                    Arg::Field(field) => parts.push(Part::Field(field)),
                    _ => bail!("bad field {single}"),
                },
                [name, args @ ..] => {
                    let args = args.iter().map(|w| arg(w)).collect::<anyhow::Result<Vec<_>>>()?;
                    check_call(name, &args)?;
                    parts.push(Part::Call(name.clone(), args));
                }
            }
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether the template has any action (if not, it renders the same every time).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Fills the template for one request.
    pub fn render(&self, ctx: &CallContext<'_>) -> String {
        let mut out = String::new();
        let mut rng = rand::rng();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(field) => field_value(field, ctx, &mut out),
                Part::Call(name, args) => {
                    let int = |a: &Arg| match a {
                        Arg::Int(n) => *n,
                        Arg::Field(f) => {
                            let mut s = String::new();
                            field_value(f, ctx, &mut s);
                            s.parse().unwrap_or(0)
                        }
                        Arg::Str(_) => 0,
                    };
                    let text = |a: &Arg| match a {
                        Arg::Str(s) => s.clone(),
                        Arg::Field(f) => {
                            let mut s = String::new();
                            field_value(f, ctx, &mut s);
                            s
                        }
                        Arg::Int(_) => String::new(),
                    };
                    match name.as_str() {
                        "newUUID" => {
                            let _ = write!(out, "{}", uuid::Uuid::new_v4());
                        }
                        "randomInt" => {
                            let (low, high) = (int(&args[0]), int(&args[1]));
                            let n = if high > low { rng.random_range(low..high) } else { low };
                            let _ = write!(out, "{n}");
                        }
                        "randomString" => {
                            const ALPHABET: &[u8] =
                                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                            for _ in 0..int(&args[0]).max(0) {
                                out.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
                            }
                        }
                        "add" => {
                            let _ = write!(out, "{}", int(&args[0]) + int(&args[1]));
                        }
                        "randomSeat" => {
                            let (r1, r2, n1, n2) =
                                (int(&args[1]), int(&args[2]), int(&args[3]), int(&args[4]));
                            let row = rng.random_range(r1..=r2.max(r1));
                            let number = rng.random_range(n1..=n2.max(n1));
                            let _ = write!(out, "{}-{row}-{number}", text(&args[0]));
                        }
                        "token" => {
                            if let Some(identity) = ctx.identity {
                                let bearer = identity.user(&text(&args[0]));
                                let value = bearer.value().to_str().unwrap_or_default();
                                out.push_str(value.strip_prefix("Bearer ").unwrap_or(value));
                            }
                        }
                        "uniqueSeat" => {
                            let per_row = int(&args[1]).max(1) as u64;
                            let n = ctx.request_number;
                            let _ = write!(out, "{}-{}-{}", text(&args[0]), n / per_row + 1, n % per_row + 1);
                        }
                        _ => {}
                    }
                }
            }
        }
        out
    }
}

fn field_value(field: &str, ctx: &CallContext<'_>, out: &mut String) {
    let now = chrono::Utc::now();
    let _ = match field {
        "RequestNumber" => write!(out, "{}", ctx.request_number),
        "WorkerID" => write!(out, "w{}", ctx.worker_id),
        "UserId" => write!(out, "user-{}", ctx.request_number),
        "UUID" => write!(out, "{}", uuid::Uuid::new_v4()),
        "Timestamp" => write!(out, "{}", now.to_rfc3339()),
        "TimestampUnix" => write!(out, "{}", now.timestamp()),
        "TimestampUnixMilli" => write!(out, "{}", now.timestamp_millis()),
        "TimestampUnixNano" => write!(out, "{}", now.timestamp_nanos_opt().unwrap_or_default()),
        "FullyQualifiedName" => write!(out, "{}", ctx.fully_qualified_name),
        "MethodName" => write!(out, "{}", ctx.method_name),
        "ServiceName" => write!(out, "{}", ctx.service_name),
        "InputName" => write!(out, "{}", ctx.input_name),
        "OutputName" => write!(out, "{}", ctx.output_name),
        "IsClientStreaming" => write!(out, "false"),
        _ => Ok(()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(n: u64) -> CallContext<'static> {
        CallContext { request_number: n, worker_id: 3, ..Default::default() }
    }

    #[test]
    fn fields_and_functions_render() -> anyhow::Result<()> {
        let t = Template::parse(r#"{"u":"{{.UserId}}","n":{{add .RequestNumber 1}},"w":"{{.WorkerID}}"}"#)?;
        assert_eq!(t.render(&ctx(41)), r#"{"u":"user-41","n":42,"w":"w3"}"#);
        let seat = Template::parse(r#"{{randomSeat "A" 1 2 5 5}}"#)?.render(&ctx(0));
        assert!(seat == "A-1-5" || seat == "A-2-5", "{seat}");
        assert_eq!(Template::parse(r#"{{uniqueSeat "B" 100}}"#)?.render(&ctx(250)), "B-3-51");
        let escaped = serde_json::to_string(&serde_json::json!({"s": "{{uniqueSeat \"C\" 10}}"}))?;
        assert_eq!(Template::parse(&escaped)?.render(&ctx(0)), r#"{"s":"C-1-1"}"#);
        let r: i64 = Template::parse("{{randomInt 7 8}}")?.render(&ctx(0)).parse()?;
        assert_eq!(r, 7);
        assert!(Template::parse("plain")?.is_constant());
        let dir = std::env::temp_dir().join(format!("template-{}", uuid::Uuid::new_v4().simple()));
        let identity = crate::identity::Identity::of_stack(&dir)?;
        let with = CallContext { identity: Some(&identity), ..ctx(7) };
        let token = Template::parse("Bearer {{token .UserId}}")?.render(&with);
        assert_eq!(
            token,
            format!("Bearer {}", identity.user("user-7").value().to_str()?.trim_start_matches("Bearer "))
        );
        assert_eq!(Template::parse("{{token \"alice\"}}")?.render(&with).split('.').count(), 3, "a JWT");
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn typos_fail_at_parse_time() {
        assert!(Template::parse("{{.UserID}}").is_err());
        assert!(Template::parse("{{randomInt 1}}").is_err());
        assert!(Template::parse("{{nope}}").is_err());
        assert!(Template::parse("{{.RequestNumber").is_err());
    }
}
