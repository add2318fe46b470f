//! Losing Redis on purpose, for the tests that prove the mesh survives it (feature `redis`).

use fred::{
    clients::Client,
    interfaces::{ClientLike, KeysInterface},
};

/// Deletes every key of the test's `prefix` with SCAN + DEL, as a Redis that lost everything
/// would look to that test (never FLUSHALL: the server is shared). Returns how many it
/// deleted; refuses a prefix that does not end with `:` or is only that.
pub async fn delete_prefix_keys(redis: &Client, prefix: &str) -> anyhow::Result<usize> {
    anyhow::ensure!(prefix.ends_with(':') && prefix.len() > 1, "refusing to delete with prefix {prefix:?}");
    let mut deleted = 0;
    let mut cursor = "0".to_owned();
    loop {
        let (next, keys): (String, Vec<String>) = redis
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), format!("{prefix}*"), "COUNT".into(), "1000".into()],
            )
            .await?;
        deleted += keys.len();
        for key in keys {
            let _: i64 = redis.del(key).await?;
        }
        if next == "0" {
            return Ok(deleted);
        }
        cursor = next;
    }
}
