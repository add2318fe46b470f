//! The generated Python and TypeScript clients (`clients/`):
//! - the seat map vectors all three decoders are tested against are what the Rust encoder
//!   makes, and the Rust decoder reads or refuses them as the file says;
//! - the committed generated code is what `clients/generate` makes from `proto/` now;
//! - each language's decoder passes its unit tests on those vectors;
//! - each example, run against a private stack, joins, gets its pass, holds two seats and sees
//!   them held in the seat map it decoded, whose counts match the server's in both encodings.
//!
//! Needs python3 (with venv), Node.js 20+ and npm (`stack test` checks them); the pinned
//! packages are installed on first use into `~/.cache/ticketing-clients` and
//! `clients/typescript/node_modules` (clients/lib.sh). The stack test also needs the service
//! binaries (`cargo build --bins`) and HAProxy.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "failures/helpers.rs"]
#[allow(dead_code)] // this test uses the stack harness and admission, not the failure checks
mod helpers;

use std::{path::PathBuf, process::Output, time::Duration};

use anyhow::Context;
use helpers::{admit, open_event, start_stack};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    seat_states,
    v1::{
        self as pb, SeatState, SeatStatesEncoding, admission_service_client::AdmissionServiceClient,
        inventory_service_client::InventoryServiceClient, seat_lock_service_client::SeatLockServiceClient,
    },
};
use tools::{catalogue, stack::workspace_root};

/// The most one script run may take (a first run installs the pinned packages): a hang fails
/// the test instead of blocking it.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

fn vectors() -> serde_json::Value {
    let path = workspace_root().join("clients/seat_states_vectors.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The vector's encoding by its enum value name, or the raw number it gives.
fn encoding_of(vector: &serde_json::Value) -> i32 {
    match &vector["encoding"] {
        serde_json::Value::String(name) => {
            SeatStatesEncoding::from_str_name(&format!("SEAT_STATES_ENCODING_{name}"))
                .unwrap_or_else(|| panic!("no SeatStatesEncoding {name}")) as i32
        }
        number => i32::try_from(number.as_i64().unwrap()).unwrap(),
    }
}

fn bytes_of(vector: &serde_json::Value) -> Vec<u8> {
    let hex = vector["hex"].as_str().unwrap();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// A seat's 2-bit code as the decoder's `SeatState` (by name: the enum's numbers may change,
/// the codes on the wire do not).
fn seat_state(code: char) -> SeatState {
    match code {
        '0' => SeatState::Free,
        '1' => SeatState::Held,
        '2' => SeatState::Sold,
        other => panic!("no seat code {other}"),
    }
}

fn seats_of(vector: &serde_json::Value) -> usize {
    usize::try_from(vector["seats"].as_u64().unwrap()).unwrap()
}

#[test]
fn the_seat_map_vectors_are_what_the_rust_encoder_makes_and_decodes() {
    let vectors = vectors();
    let valid = vectors["valid"].as_array().unwrap();
    let invalid = vectors["invalid"].as_array().unwrap();
    assert!(valid.len() >= 8 && invalid.len() >= 10, "{} valid, {} invalid", valid.len(), invalid.len());
    let mut encodings = std::collections::BTreeSet::new();
    for vector in valid {
        let name = vector["name"].as_str().unwrap();
        let codes = vector["states"].as_str().unwrap();
        let seats = seats_of(vector);
        assert_eq!(codes.len(), seats, "{name}");
        let mut packed = vec![0u8; seats.div_ceil(4)];
        for (seat, code) in codes.chars().enumerate() {
            packed[seat / 4] |= (code.to_digit(10).unwrap() as u8) << ((seat % 4) * 2);
        }
        let encoded = seat_states::encode(&packed, seats);
        let expected = bytes_of(vector);
        assert_eq!(
            (encoded.encoding as i32, encoded.bytes.as_ref()),
            (encoding_of(vector), expected.as_slice()),
            "{name}: the encoder makes {:?} {:02x?}",
            encoded.encoding,
            encoded.bytes.as_ref()
        );
        let states = seat_states::decode(encoding_of(vector), &expected, seats).unwrap();
        assert_eq!(states, codes.chars().map(seat_state).collect::<Vec<_>>(), "{name}");
        encodings.insert(vector["encoding"].as_str().unwrap().to_owned());
    }
    assert_eq!(encodings.into_iter().collect::<Vec<_>>(), ["PACKED", "RUNS"]);
    for vector in invalid {
        let name = vector["name"].as_str().unwrap();
        let refused =
            seat_states::decode(encoding_of(vector), &bytes_of(vector), seats_of(vector)).expect_err(name);
        // The variant's name, as the other decoders name the reason (`RunsLength { .. }`).
        let debug = format!("{refused:?}");
        let kind = debug.split(['(', ' ', '{']).next().unwrap();
        assert_eq!(kind, vector["error"].as_str().unwrap(), "{name}: {refused}");
    }
}

/// Runs `script` of `clients/` with `args` and `envs`, bounded by [`SCRIPT_TIMEOUT`].
async fn run_script(script: &str, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<Output> {
    let path: PathBuf = workspace_root().join("clients").join(script);
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(&path)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .with_context(|| format!("clients/{script} {args:?} ran longer than {SCRIPT_TIMEOUT:?}"))?
        .with_context(|| format!("cannot run bash clients/{script}"))
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_committed_generated_clients_match_the_protos() -> anyhow::Result<()> {
    let output = run_script("generate", &["--check"], &[]).await?;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "clients/generate --check: {}\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("the generated clients match proto/"), "{stdout}");
    Ok(())
}

#[tokio::test]
async fn the_python_and_typescript_decoders_pass_their_unit_tests() -> anyhow::Result<()> {
    let output = run_script("check", &["unit"], &[]).await?;
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "clients/check unit: {}\n{stdout}\n{stderr}", output.status);
    // unittest reports on stderr, node's test runner on stdout: each ran its tests (at least
    // the six of each suite today), none failed.
    let count = |text: &str, prefix: &str| -> u32 {
        text.lines().find_map(|l| l.strip_prefix(prefix)?.split(' ').next()?.parse().ok()).unwrap_or(0)
    };
    assert!(count(&stderr, "Ran ") >= 6 && stderr.contains("\nOK"), "{stderr}");
    assert!(count(&stdout, "# pass ") >= 6 && stdout.contains("# fail 0"), "{stdout}");
    Ok(())
}

/// The hold id and seats of an example's line `OK: hold <id> of <n> seats (<seats>) is held in
/// the decoded seat map`.
fn reported_hold(stdout: &str) -> Option<(String, Vec<String>)> {
    let line = stdout.lines().find(|l| l.starts_with("OK: hold "))?;
    let rest = line.strip_prefix("OK: hold ")?;
    let (hold_id, rest) = rest.split_once(" of ")?;
    let seats = rest.split_once('(')?.1.split_once(')')?.0;
    Some((hold_id.to_owned(), seats.split(", ").map(str::to_owned).collect()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_hold_seats_and_see_them_in_the_decoded_seat_map() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    println!("stack up after {:?}", started.elapsed());
    let lb = tonic::transport::Endpoint::from_shared(stack.config().lb_url())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect_lazy();
    let identity = &stack.0.identity;

    // Zone A, 2 rows of 10, where the examples hold; zone B, one row of 8, every other seat held
    // below (so its map travels packed while A's travels as runs); a general-admission floor.
    let venue = pb::CreateVenueRequest {
        name: "Client Hall".into(),
        zones: vec![
            catalogue::seated_zone("A", "Stalls", 5_000, vec!["1".into(), "2".into()], 10),
            catalogue::seated_zone("B", "Balcony", 3_000, vec!["1".into()], 8),
            pb::ZoneSpec {
                zone_id: "FLOOR".into(),
                name: "Floor".into(),
                price_cents: 2_000,
                layout: Some(pb::zone_spec::Layout::GeneralAdmission(pb::GeneralAdmissionLayout {
                    capacity: 50,
                })),
            },
        ],
    };
    let event =
        catalogue::create_event(lb.clone(), &identity.admin(), venue, open_event("", "Clients", 4, 10))
            .await?;
    let event_id = event.event_id.clone();

    let pass = admit(
        AdmissionServiceClient::new(lb.clone()),
        identity.user("carol"),
        event_id.clone(),
        "carol".into(),
    )
    .await?;
    let scattered: Vec<String> = [1, 3, 5, 7].iter().map(|n| format!("B-1-{n}")).collect();
    SeatLockServiceClient::new(lb.clone())
        .hold_seats(identity.as_user(
            "carol",
            pb::HoldSeatsRequest {
                pass_token: pass,
                event_id: event_id.clone(),
                user_id: String::new(),
                seat_ids: scattered,
            },
        ))
        .await?;
    let inventory = InventoryServiceClient::new(lb.clone());
    let shown = eventually(helpers::EVENTUALLY, || {
        let (mut inventory, request) = (
            inventory.clone(),
            identity
                .as_user("carol", pb::GetSeatMapRequest { event_id: event_id.clone(), zone_id: "B".into() }),
        );
        async move {
            let map = inventory.get_seat_map(request).await.ok()?.into_inner();
            map.zones.first().filter(|zone| zone.held == 4).map(|zone| zone.seat_states_encoding)
        }
    })
    .await;
    assert_eq!(shown, Some(SeatStatesEncoding::Packed as i32), "zone B never showed its 4 holds packed");
    println!("zone B held after {:?}", started.elapsed());

    let target = stack.config().lb_url().trim_start_matches("http://").to_owned();
    for (language, user) in [("python", "dana-py"), ("typescript", "erin-ts")] {
        let envs = [
            ("TICKETING_TARGET", target.clone()),
            ("TICKETING_TOKEN", identity.token(user, false, Duration::from_secs(3_600))),
            ("TICKETING_EVENT_ID", event_id.clone()),
        ];
        let output = run_script("check", &[language, "--wait", "60"], &envs).await?;
        let (stdout, stderr) = text(&output);
        println!("--- {language} example, done after {:?} ---\n{stdout}{stderr}", started.elapsed());
        assert!(
            output.status.success(),
            "the {language} example failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        let (hold_id, seats) =
            reported_hold(&stdout).with_context(|| format!("{language}: no OK line in\n{stdout}"))?;
        // The decoded map of zone B: its counts agree with the server's (the example checks
        // that) and its form was the packed one.
        assert!(stdout.contains("zone B: 4 free, 4 held, 0 sold (PACKED, 2 bytes)"), "{language}:\n{stdout}");
        assert!(stdout.contains("zone FLOOR: general admission, 50 free"), "{language}:\n{stdout}");
        assert!(stdout.contains(&format!("released hold {hold_id}")), "{language}:\n{stdout}");

        // The hold the example reported is real: the user's, of the seats it names, in zone A,
        // and released by the example at its end.
        let hold = SeatLockServiceClient::new(lb.clone())
            .get_hold(identity.as_user(
                user,
                pb::GetHoldRequest {
                    event_id: event_id.clone(),
                    hold_id: hold_id.clone(),
                    user_id: String::new(),
                },
            ))
            .await?
            .into_inner();
        assert_eq!((hold.user_id.as_str(), hold.zone_id.as_str()), (user, "A"), "{language}");
        assert_eq!(hold.seat_ids, seats, "{language}");
        assert_eq!(seats.len(), 2, "{language}");
        assert_eq!(hold.state, pb::HoldState::Released as i32, "{language}");
        // While the hold lived, its seats were held in zone A, which travels as runs.
        assert!(stdout.contains("zone A: 18 free, 2 held, 0 sold (RUNS, "), "{language}:\n{stdout}");
    }
    Ok(())
}
