//! The binary's start-up: a malformed secret setting exits 64 without printing the secret,
//! and the committed example secrets are refused unless ALLOW_EXAMPLE_SECRETS is set.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use ticketing_proto::pass::generate_signing_key;

/// The committed development key (k8s/base/pass-signing-keys.env).
const EXAMPLE_SIGNING_KEY: &str = "dev:j0qaVnym6i8KY9oX21flE4s6OfdGmYP5kSWkEBOnE30";

/// Runs the admission binary with `env` and nothing else of the test's environment that
/// could matter; it must exit on its configuration before connecting anywhere.
fn admission(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_admission"));
    for name in ["PASS_SIGNING_KEYS", "SHUFFLE_KEY", "ALLOW_EXAMPLE_SECRETS", "PASS_KEYS"] {
        command.env_remove(name);
    }
    let jwks = service_runtime::auth::AuthArgs::for_tests().jwks;
    command.env("GRPC_ADDR", "127.0.0.1:0").env("METRICS_ADDR", "127.0.0.1:0").env("AUTH_JWKS", jwks);
    let Output { status, stderr, .. } = command.envs(env.iter().copied()).output().unwrap();
    (status.code(), String::from_utf8_lossy(&stderr).into_owned())
}

#[test]
fn malformed_secrets_are_refused_without_printing_them() {
    let (signing, _) = generate_signing_key("k1");
    let seed = signing.split_once(':').unwrap().1;
    // A seed one character short, one with a stray character, a seed without its key id.
    let short = format!("k1:{}", &seed[..seed.len() - 1]);
    let stray = format!("k1:{}*", &seed[1..]);
    for bad in [short.as_str(), stray.as_str(), seed] {
        let (code, stderr) =
            admission(&[("PASS_SIGNING_KEYS", bad), ("SHUFFLE_KEY", "a-shuffle-key-of-tests")]);
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains("PASS_SIGNING_KEYS"), "the setting is named: {stderr}");
        assert!(!stderr.contains(&seed[1..seed.len() - 1]), "the secret was printed: {stderr}");
    }
    let (code, stderr) = admission(&[("PASS_SIGNING_KEYS", &signing), ("SHUFFLE_KEY", "SHORT-SECRET")]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("SHUFFLE_KEY") && !stderr.contains("SHORT-SECRET"), "{stderr}");
    // --help shows neither.
    let mut help = Command::new(env!("CARGO_BIN_EXE_admission"));
    let help = help.arg("--help").env("PASS_SIGNING_KEYS", &signing).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("PASS_SIGNING_KEYS") && !help.contains(seed), "{help}");
}

#[test]
fn the_committed_example_keys_are_refused_outside_a_development_stack() {
    let (code, stderr) = admission(&[("PASS_SIGNING_KEYS", EXAMPLE_SIGNING_KEY)]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("PASS_SIGNING_KEYS") && stderr.contains("ALLOW_EXAMPLE_SECRETS"), "{stderr}");
    assert!(!stderr.contains(EXAMPLE_SIGNING_KEY.split_once(':').unwrap().1), "{stderr}");

    let (signing, _) = generate_signing_key("k1");
    let example_shuffle = admission::fairness::EXAMPLE_SHUFFLE_KEYS[0];
    let (code, stderr) = admission(&[("PASS_SIGNING_KEYS", &signing), ("SHUFFLE_KEY", example_shuffle)]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("SHUFFLE_KEY") && !stderr.contains(example_shuffle), "{stderr}");
}
