//! Losing Redis on purpose, for the tests that prove the mesh survives it (feature `redis`).

use fred::{clients::Client, interfaces::LuaInterface};

/// Deletes every key of the test's `prefix` in one atomic script, as a Redis that lost
/// everything would look to that test (never FLUSHALL: the server is shared). Atomic, because
/// a real loss is: deleting key by key lets the services' scripts run between two deletions
/// (a rebuild then sees half a loss), and on a server holding many other keys (a full sale's)
/// a SCAN takes long enough for that to happen. Returns how many it deleted; refuses a prefix
/// that does not end with `:` or is only that.
pub async fn delete_prefix_keys(redis: &Client, prefix: &str) -> anyhow::Result<usize> {
    anyhow::ensure!(prefix.ends_with(':') && prefix.len() > 1, "refusing to delete with prefix {prefix:?}");
    // KEYS inside the script: one step for the whole server, like the loss it stands for.
    const DELETE_ALL: &str = "local n = 0 \
        for _, key in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', key) n = n + 1 end \
        return n";
    let glob: String =
        prefix.chars().flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
    let deleted: i64 = redis.eval(DELETE_ALL, Vec::<String>::new(), vec![format!("{glob}*")]).await?;
    Ok(usize::try_from(deleted).unwrap_or(0))
}
