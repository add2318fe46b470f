//! The binary's start-up: a malformed PASS_VERIFY_KEYS exits 64 without printing its value,
//! and the committed example key is refused unless ALLOW_EXAMPLE_SECRETS is set.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use ticketing_proto::pass::EXAMPLE_VERIFY_KEYS;

fn seat_lock(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seat-lock"));
    for name in ["PASS_VERIFY_KEYS", "ALLOW_EXAMPLE_SECRETS", "PASS_KEYS"] {
        command.env_remove(name);
    }
    let jwks = service_runtime::auth::AuthArgs::for_tests().jwks;
    command.env("GRPC_ADDR", "127.0.0.1:0").env("METRICS_ADDR", "127.0.0.1:0").env("AUTH_JWKS", jwks);
    // Everything else valid, so the pass keys are what is judged.
    let certs = std::env::temp_dir().join(format!("seat-lock-config-certs-{}", std::process::id()));
    command.envs(test_support::certs::ensure(&certs).unwrap().env("seat-lock"));
    let Output { status, stderr, .. } = command.envs(env.iter().copied()).output().unwrap();
    (status.code(), String::from_utf8_lossy(&stderr).into_owned())
}

#[test]
fn a_malformed_or_example_verify_key_is_refused_without_printing_it() {
    let (code, stderr) = seat_lock(&[("PASS_VERIFY_KEYS", "k1:NOT-A-KEY-BUT-SOMETHING-PRIVATE")]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("PASS_VERIFY_KEYS") && !stderr.contains("SOMETHING-PRIVATE"), "{stderr}");

    let example = format!("dev:{}", EXAMPLE_VERIFY_KEYS[0]);
    let (code, stderr) = seat_lock(&[("PASS_VERIFY_KEYS", &example)]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("PASS_VERIFY_KEYS") && stderr.contains("ALLOW_EXAMPLE_SECRETS"), "{stderr}");
}
