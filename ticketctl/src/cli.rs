//! The commands, their gRPC calls and the exit code of each failure.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use service_runtime::{auth::bearer, status::reason};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient,
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::{output, venue};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  any other failure (the service failed: INTERNAL, RESOURCE_EXHAUSTED, ...)
  2  bad arguments (unknown command or flag, missing EVENT, malformed --target, a venue
     file that cannot be read or is not a venue)
  3  refused by the service: NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION (e.g. the sale
     is closed), PERMISSION_DENIED (the token lacks the admin scope), UNAUTHENTICATED (no or
     a bad token), ALREADY_EXISTS
  4  unreachable: cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED";

/// The operator's command line for the flash-sale mesh.
///
/// Talks gRPC to the load balancer with an admin token (mint one for the local stack:
/// `cargo run --bin stack -- token --user ops --admin`). Human tables by default, `--json`
/// for scripts.
#[derive(Debug, Parser)]
#[command(name = "ticketctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The load balancer's URL.
    #[arg(long, global = true, env = "TICKETCTL_TARGET", default_value = "http://127.0.0.1:8080",
          value_parser = parse_target)]
    pub target: String,
    /// Bearer token (JWT) with the admin scope.
    #[arg(long, global = true, env = "TICKETCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (one document) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Longest any call may take, in seconds.
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Venues of the catalogue (inventory).
    #[command(subcommand, after_help = EXIT_CODES)]
    Venue(VenueCommand),
    /// Events of the catalogue (inventory).
    #[command(subcommand, after_help = EXIT_CODES)]
    Event(EventCommand),
    /// Pause, resume or close an event's sale (admission).
    #[command(subcommand, after_help = EXIT_CODES)]
    Sale(SaleCommand),
    /// The waiting room of an event (admission).
    #[command(subcommand, after_help = EXIT_CODES)]
    Queue(QueueCommand),
    /// Seat availability of an event (inventory).
    #[command(subcommand, after_help = EXIT_CODES)]
    Seats(SeatsCommand),
}

#[derive(Debug, Subcommand)]
pub enum VenueCommand {
    /// Create a venue from a YAML file: `name`, and `zones`, each with `id`, `name`,
    /// `price_cents` and either `rows` + `seats_per_row` (+ `accessible` seat ids) or
    /// `capacity` (general admission).
    #[command(after_help = EXIT_CODES)]
    Create {
        /// The venue file.
        #[arg(short = 'f', long = "file", value_name = "VENUE.yaml")]
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Create an event on a venue.
    #[command(after_help = EXIT_CODES)]
    Create(CreateEventArgs),
    /// One event with its zones.
    #[command(after_help = EXIT_CODES)]
    Get(EventArg),
    /// Every event, by sale-open time.
    #[command(after_help = EXIT_CODES)]
    List,
}

#[derive(Debug, Subcommand)]
pub enum SaleCommand {
    /// Stop admitting: joins still queue, nobody is admitted until `resume`.
    #[command(after_help = EXIT_CODES)]
    Pause(EventArg),
    /// Admit again after `pause`.
    #[command(after_help = EXIT_CODES)]
    Resume(EventArg),
    /// End the sale for good: nobody is admitted, the waiting users are taken out of the
    /// queue, joins are refused. Passes already issued stay valid until they expire.
    #[command(after_help = EXIT_CODES)]
    Close(EventArg),
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// The sale's state, queue length, passes issued and active passes.
    #[command(after_help = EXIT_CODES)]
    Show(EventArg),
}

#[derive(Debug, Subcommand)]
pub enum SeatsCommand {
    /// Per-zone availability: capacity, free, held, sold.
    #[command(after_help = EXIT_CODES)]
    Show(EventArg),
}

#[derive(Debug, Args)]
pub struct CreateEventArgs {
    /// The venue id (from `venue create`).
    #[arg(long = "venue", value_name = "VENUE")]
    pub venue_id: String,
    /// The event's name.
    #[arg(long)]
    pub name: String,
    /// When the show starts (RFC 3339, e.g. 2027-06-01T20:00:00Z).
    #[arg(long, value_parser = parse_time)]
    pub starts_at: prost_types::Timestamp,
    /// When the sale opens (RFC 3339); users who join earlier are shuffled at that moment.
    #[arg(long, value_parser = parse_time)]
    pub sale_opens_at: prost_types::Timestamp,
    /// The most tickets one user may buy.
    #[arg(long, default_value_t = 4)]
    pub max_tickets_per_user: u32,
    /// Three upper-case letters; the service's default (EUR) when left out.
    #[arg(long, default_value = "")]
    pub currency: String,
    /// Most passes active at once; 0: the service's default.
    #[arg(long, default_value_t = 0)]
    pub admission_capacity: u32,
    /// The admission controller's step; 0: the service's default.
    #[arg(long, default_value_t = 0)]
    pub admission_tick_ms: u32,
    /// How long a pass lasts; 0: the service's default.
    #[arg(long, default_value_t = 0)]
    pub pass_ttl_seconds: u32,
    /// How long before the start owners may no longer cancel; 0: the service's default.
    #[arg(long, default_value_t = 0)]
    pub cancellation_cutoff_seconds: u32,
}

fn parse_time(text: &str) -> Result<prost_types::Timestamp, String> {
    let time =
        chrono::DateTime::parse_from_rfc3339(text).map_err(|e| format!("not an RFC 3339 time: {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

#[derive(Debug, Args)]
pub struct EventArg {
    /// The event id (a UUID).
    #[arg(value_name = "EVENT")]
    pub event_id: String,
}

fn parse_target(target: &str) -> Result<String, String> {
    let uri: tonic::codegen::http::Uri = target.parse().map_err(|e| format!("not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(target.to_owned()),
        _ => Err("expected http://HOST:PORT or https://HOST:PORT".to_owned()),
    }
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The service answered with a refusal (exit 3).
    Refused(Status),
    /// The mesh could not be reached or did not answer in time (exit 4).
    Unreachable(String),
    /// Bad input the service was never asked about, such as a venue file (exit 2).
    BadInput(String),
    /// Anything else (exit 1).
    Failed(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Failed(_) => 1,
            Self::BadInput(_) => 2,
            Self::Refused(_) => 3,
            Self::Unreachable(_) => 4,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(status) => {
                let why = reason(status).map(|(reason, _)| format!(" ({reason})")).unwrap_or_default();
                write!(f, "refused: {:?}{why}: {}", status.code(), status.message())
            }
            Self::Unreachable(message) => write!(f, "unreachable: {message}"),
            Self::Failed(message) => write!(f, "failed: {message}"),
            Self::BadInput(message) => write!(f, "bad input: {message}"),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::NotFound
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::AlreadyExists => Self::Refused(status),
            Code::Unavailable | Code::DeadlineExceeded => {
                Self::Unreachable(format!("{:?}: {}", status.code(), status.message()))
            }
            code => Self::Failed(format!("{code:?}: {}", status.message())),
        }
    }
}

/// The connection and the token every call carries.
struct Mesh {
    channel: Channel,
    token: Option<String>,
}

impl Mesh {
    fn new(cli: &Cli) -> Result<Self, Failure> {
        let timeout = Duration::from_secs(cli.timeout_secs);
        let channel = tonic::transport::Endpoint::from_shared(cli.target.clone())
            .map_err(|e| Failure::Failed(format!("--target {}: {e}", cli.target)))?
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .connect_lazy();
        Ok(Self { channel, token: cli.token.clone() })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", bearer(token));
        }
        request
    }

    fn inventory(&self) -> InventoryServiceClient<Channel> {
        InventoryServiceClient::new(self.channel.clone())
    }

    fn admission(&self) -> AdmissionServiceClient<Channel> {
        AdmissionServiceClient::new(self.channel.clone())
    }
}

/// Runs the command; answers what to print.
pub async fn run(cli: &Cli) -> Result<String, Failure> {
    let mesh = Mesh::new(cli)?;
    let json = cli.json;
    match &cli.command {
        Command::Venue(VenueCommand::Create { file }) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Failure::BadInput(format!("{}: {e}", file.display())))?;
            let venue =
                venue::parse(&text).map_err(|e| Failure::BadInput(format!("{}: {e}", file.display())))?;
            let venue = mesh.inventory().create_venue(mesh.request(venue)).await?.into_inner().venue;
            let venue = venue.ok_or_else(|| Failure::Failed("the answer carries no venue".into()))?;
            Ok(output::venue(&venue, json))
        }
        Command::Event(EventCommand::Create(args)) => {
            let request = mesh.request(pb::CreateEventRequest {
                venue_id: args.venue_id.clone(),
                name: args.name.clone(),
                starts_at: Some(args.starts_at),
                sale_opens_at: Some(args.sale_opens_at),
                max_tickets_per_user: args.max_tickets_per_user,
                currency: args.currency.clone(),
                admission_capacity: args.admission_capacity,
                admission_tick_ms: args.admission_tick_ms,
                pass_ttl_seconds: args.pass_ttl_seconds,
                cancellation_cutoff_seconds: args.cancellation_cutoff_seconds,
            });
            let event = mesh.inventory().create_event(request).await?.into_inner().event;
            let event = event.ok_or_else(|| Failure::Failed("the answer carries no event".into()))?;
            Ok(output::event(&event, json))
        }
        Command::Event(EventCommand::Get(arg)) => {
            let request = mesh.request(pb::GetEventRequest { event_id: arg.event_id.clone() });
            let event = mesh.inventory().get_event(request).await?.into_inner().event;
            let event = event.ok_or_else(|| Failure::Failed("the answer carries no event".into()))?;
            Ok(output::event(&event, json))
        }
        Command::Event(EventCommand::List) => {
            let mut events = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = mesh.request(pb::ListEventsRequest { page_size: 100, page_token });
                let page = mesh.inventory().list_events(request).await?.into_inner();
                events.extend(page.events);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Ok(output::events(&events, json))
        }
        Command::Sale(action) => {
            let (arg, verb) = match action {
                SaleCommand::Pause(arg) => (arg, "paused"),
                SaleCommand::Resume(arg) => (arg, "resumed"),
                SaleCommand::Close(arg) => (arg, "closed"),
            };
            let request = mesh.request(pb::SaleControlRequest { event_id: arg.event_id.clone() });
            let mut admission = mesh.admission();
            let status = match action {
                SaleCommand::Pause(_) => admission.pause_sale(request).await,
                SaleCommand::Resume(_) => admission.resume_sale(request).await,
                SaleCommand::Close(_) => admission.close_sale(request).await,
            }?
            .into_inner();
            Ok(output::sale(&status, Some(verb), json))
        }
        Command::Queue(QueueCommand::Show(arg)) => {
            let request = mesh.request(pb::SaleControlRequest { event_id: arg.event_id.clone() });
            let status = mesh.admission().get_sale_status(request).await?.into_inner();
            Ok(output::sale(&status, None, json))
        }
        Command::Seats(SeatsCommand::Show(arg)) => {
            let request = mesh.request(pb::GetAvailabilityRequest { event_id: arg.event_id.clone() });
            let availability = mesh.inventory().get_availability(request).await?.into_inner();
            Ok(output::availability(&availability, json))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let cases = [
            (Code::NotFound, 3),
            (Code::InvalidArgument, 3),
            (Code::FailedPrecondition, 3),
            (Code::PermissionDenied, 3),
            (Code::Unauthenticated, 3),
            (Code::Unavailable, 4),
            (Code::DeadlineExceeded, 4),
            (Code::Internal, 1),
            (Code::ResourceExhausted, 1),
        ];
        for (code, exit) in cases {
            assert_eq!(Failure::from(Status::new(code, "m")).exit_code(), exit, "{code:?}");
        }
    }

    #[test]
    fn a_target_must_be_an_http_url() {
        assert!(parse_target("http://127.0.0.1:8080").is_ok());
        assert!(parse_target("https://lb.example:443").is_ok());
        assert!(parse_target("127.0.0.1:8080").is_err());
        assert!(parse_target("ftp://host").is_err());
    }

    #[test]
    fn times_are_rfc_3339() {
        assert_eq!(parse_time("2027-06-01T20:00:00Z").unwrap().seconds, 1_811_880_000);
        assert_eq!(parse_time("2027-06-01T22:00:00+02:00").unwrap().seconds, 1_811_880_000);
        assert!(parse_time("tomorrow").is_err());
    }
}
