//! Redis Lua scripts as the services run them: loaded once at start-up, called by SHA, and
//! sent whole when Redis does not know the SHA.

use fred::{
    bytes_utils::Str,
    clients::Pool,
    interfaces::LuaInterface,
    types::{FromValue, MultipleKeys, MultipleValues},
};

/// A Lua script loaded into Redis. Calls go by SHA (EVALSHA); where Redis does not know it
/// (a restart or a `SCRIPT FLUSH`, or another Redis Cluster master than the one it was first
/// loaded on) the call is sent whole with EVAL, which runs on the node owning the keys and
/// leaves the script cached there. Either way the script runs once per call.
#[derive(Debug)]
pub struct LuaScript {
    source: Str,
    /// A script's SHA1 depends only on its text, so it never changes after the load.
    sha: Str,
}

impl LuaScript {
    /// Loads `source` into Redis (SCRIPT LOAD); fails when Redis refuses it (a syntax error
    /// shows here, at start-up, rather than on the first request).
    pub async fn load(pool: &Pool, source: impl Into<Str>) -> Result<Self, fred::error::Error> {
        let source = source.into();
        let sha: String = pool.next().script_load(source.clone()).await?;
        Ok(Self { source, sha: Str::from(sha) })
    }

    /// `prelude` (shared helper functions, such as a service's `common.lua`) followed by
    /// `body`, as one script: Redis has no `require`, so shared Lua is prepended.
    pub fn with_prelude(prelude: &str, body: &str) -> String {
        format!("{prelude}\n{body}")
    }

    /// Runs the script with `keys` and `args` on one connection of `pool`. Keys and
    /// arguments are kept for the rare NOSCRIPT retry; `Bytes`-backed ones (`Key`, `Value`)
    /// cost reference counts, not copies.
    pub async fn call<R, K, V>(&self, pool: &Pool, keys: K, args: V) -> Result<R, fred::error::Error>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Clone + Send,
        V: TryInto<MultipleValues> + Clone + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        let client = pool.next();
        match client.evalsha(self.sha.clone(), keys.clone(), args.clone()).await {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                client.eval(self.source.clone(), keys, args).await
            }
            result => result,
        }
    }

    /// The script's SHA1, as EVALSHA names it.
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use std::time::Duration;

    use fred::interfaces::ClientLike;

    use super::*;

    /// The test Redis (`TEST_REDIS_URL`, as `test_support::testenv` reads it). The scripts here touch
    /// no key, so the shared server's data is left alone.
    async fn pool() -> Pool {
        let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let pool = crate::redis::pool(&url, 2, Duration::from_secs(5)).unwrap();
        pool.init().await.unwrap();
        pool
    }

    #[tokio::test]
    async fn a_script_runs_by_sha_and_is_sent_whole_when_redis_does_not_know_it() {
        let pool = pool().await;
        let source =
            LuaScript::with_prelude("local function twice(x) return x .. x end", "return twice(ARGV[1])");
        let script = LuaScript::load(&pool, source.clone()).await.unwrap();
        let keys: Vec<String> = vec![];
        let answer: String = script.call(&pool, keys.clone(), vec!["ab".to_owned()]).await.unwrap();
        assert_eq!(answer, "abab");
        // A SHA Redis never saw, as after a restart: NOSCRIPT, then EVAL with the text.
        let forgotten = LuaScript { source: Str::from(source), sha: Str::from("0".repeat(40)) };
        let answer: String = forgotten.call(&pool, keys.clone(), vec!["cd".to_owned()]).await.unwrap();
        assert_eq!(answer, "cdcd");
        // Any other error is the caller's, not retried.
        let failing = LuaScript::load(&pool, "return redis.error_reply('BOOM')").await.unwrap();
        let error = failing.call::<String, _, _>(&pool, keys, Vec::<String>::new()).await.unwrap_err();
        assert!(error.details().contains("BOOM"), "{error:?}");
        // A script Redis cannot compile is refused at load.
        assert!(LuaScript::load(&pool, "return (").await.is_err());
    }
}
