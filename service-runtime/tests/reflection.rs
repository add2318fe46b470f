//! Server reflection as a client such as grpcurl or Postman uses it: asks for the file of each
//! public service, then for every file that file imports (`google/protobuf/timestamp.proto`,
//! `ticketing/events/v1/events.proto`), and so on until every import is resolved. A file
//! that reflection cannot serve leaves the client unable to build the service's types.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::{BTreeSet, VecDeque};

use common::{Served, args};
use prost::Message;
use prost_types::FileDescriptorProto;

/// The public services of the contract, each of which every service describes.
const PUBLIC_SERVICES: &[&str] = &[
    "ticketing.v1.AdmissionService",
    "ticketing.v1.SeatLockService",
    "ticketing.v1.InventoryService",
    "ticketing.v1.PaymentService",
    "ticketing.v1.NotifierService",
];

/// One reflection protocol version: its client, request and response types.
macro_rules! reflection_version {
    ($name:ident, $pb:path) => {
        mod $name {
            use pb::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            };
            use tonic::transport::Channel;
            use $pb as pb;

            /// Sends `request` on one reflection stream and returns the encoded files of the
            /// answer, or the error the server answered with.
            pub async fn ask(channel: &Channel, request: MessageRequest) -> Result<Vec<Vec<u8>>, String> {
                let mut client = ServerReflectionClient::new(channel.clone());
                let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
                let mut answers = client
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                    .expect("stream")
                    .into_inner();
                // tonic-reflection answers an unknown name with a NOT_FOUND status on the stream;
                // other servers answer with an ErrorResponse. Both are a missing file.
                let answer = match answers.message().await {
                    Ok(answer) => answer.expect("one answer"),
                    Err(status) => return Err(format!("{:?}: {}", status.code(), status.message())),
                };
                match answer.message_response.expect("a response") {
                    MessageResponse::FileDescriptorResponse(files) => Ok(files.file_descriptor_proto),
                    MessageResponse::ErrorResponse(error) => {
                        Err(format!("{}: {}", error.error_code, error.error_message))
                    }
                    other => panic!("unexpected answer {other:?}"),
                }
            }

            pub async fn by_symbol(channel: &Channel, symbol: &str) -> Result<Vec<Vec<u8>>, String> {
                ask(channel, MessageRequest::FileContainingSymbol(symbol.to_owned())).await
            }

            pub async fn by_filename(channel: &Channel, file: &str) -> Result<Vec<Vec<u8>>, String> {
                ask(channel, MessageRequest::FileByFilename(file.to_owned())).await
            }

            pub async fn services(channel: &Channel) -> Vec<String> {
                let mut client = ServerReflectionClient::new(channel.clone());
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                };
                let mut answers = client
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                    .expect("stream")
                    .into_inner();
                match answers.message().await.expect("answer").expect("one answer").message_response {
                    Some(MessageResponse::ListServicesResponse(list)) => {
                        list.service.into_iter().map(|s| s.name).collect()
                    }
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }
    };
}

reflection_version!(v1, tonic_reflection::pb::v1);
reflection_version!(v1alpha, tonic_reflection::pb::v1alpha);

fn decode(files: Vec<Vec<u8>>) -> Vec<FileDescriptorProto> {
    files
        .iter()
        .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("a file descriptor"))
        .collect()
}

/// Resolves `service` the way a reflection client does; returns every file it needed, or the
/// imports the server could not serve.
async fn resolve<F, G>(
    service: &str,
    by_symbol: F,
    by_filename: impl Fn(String) -> G,
) -> Result<BTreeSet<String>, String>
where
    F: std::future::Future<Output = Result<Vec<Vec<u8>>, String>>,
    G: std::future::Future<Output = Result<Vec<Vec<u8>>, String>>,
{
    let first = decode(by_symbol.await.map_err(|e| format!("{service}: {e}"))?);
    let mut known = BTreeSet::new();
    let mut missing = Vec::new();
    let mut queue: VecDeque<FileDescriptorProto> = first.into();
    while let Some(file) = queue.pop_front() {
        if !known.insert(file.name().to_owned()) {
            continue;
        }
        for dependency in &file.dependency {
            if known.contains(dependency) {
                continue;
            }
            match by_filename(dependency.clone()).await {
                Ok(files) => queue.extend(decode(files)),
                Err(error) => missing.push(format!("{dependency} (imported by {}): {error}", file.name())),
            }
        }
    }
    if missing.is_empty() { Ok(known) } else { Err(format!("{service}: {}", missing.join("; "))) }
}

#[tokio::test]
async fn every_public_service_resolves_with_all_its_imports_in_v1_and_v1alpha() {
    let mut served = Served::bind(args(64, 1_000)).await;
    let channel = served.channel().await;

    let listed = v1::services(&channel).await;
    // Each version lists itself as the reflection service; everything else is the same.
    let without_reflection = |list: Vec<String>| -> Vec<String> {
        list.into_iter().filter(|s| !s.starts_with("grpc.reflection.")).collect()
    };
    assert_eq!(without_reflection(v1alpha::services(&channel).await), without_reflection(listed.clone()));
    for service in PUBLIC_SERVICES {
        assert!(listed.iter().any(|s| s == service), "{service} not listed: {listed:?}");
    }
    // The public listener describes what it serves: not the internal RPCs, which only the
    // mutual-TLS listener answers.
    let internal: Vec<_> = listed.iter().filter(|s| s.starts_with("ticketing.internal.")).collect();
    assert!(internal.is_empty(), "internal services listed on the public listener: {internal:?}");
    // The error reasons are part of the contract a client can look up.
    let errors = decode(v1::by_symbol(&channel, "ticketing.v1.ErrorReason").await.unwrap());
    assert_eq!(errors.iter().map(|f| f.name()).collect::<Vec<_>>(), ["ticketing/v1/errors.proto"]);
    let mut failures = Vec::new();
    for service in PUBLIC_SERVICES {
        for (version, outcome) in [
            (
                "v1",
                resolve(service, v1::by_symbol(&channel, service), |f| {
                    let channel = channel.clone();
                    async move { v1::by_filename(&channel, &f).await }
                })
                .await,
            ),
            (
                "v1alpha",
                resolve(service, v1alpha::by_symbol(&channel, service), |f| {
                    let channel = channel.clone();
                    async move { v1alpha::by_filename(&channel, &f).await }
                })
                .await,
            ),
        ] {
            match outcome {
                Ok(files) => {
                    // Every service's file imports the well-known Timestamp.
                    assert!(
                        files.contains("google/protobuf/timestamp.proto"),
                        "{version} {service}: {files:?}"
                    );
                }
                Err(error) => failures.push(format!("{version} {error}")),
            }
        }
    }
    assert!(failures.is_empty(), "reflection cannot resolve:\n{}", failures.join("\n"));

    // The notifier's file also imports the event messages: two levels of imports resolve.
    let notifier = resolve(
        "ticketing.v1.NotifierService",
        v1::by_symbol(&channel, "ticketing.v1.NotifierService"),
        |f| {
            let channel = channel.clone();
            async move { v1::by_filename(&channel, &f).await }
        },
    )
    .await
    .unwrap();
    assert!(notifier.contains("ticketing/events/v1/events.proto"), "{notifier:?}");

    // An unknown file is an error answer, not a hang or an empty file.
    assert!(v1::by_filename(&channel, "no/such.proto").await.is_err());

    served.stop();
    served.serving.await.expect("join").expect("clean stop");
}

/// The check above can fail: a reflection server whose descriptor set lacks an import (the
/// well-known Timestamp) serves each service's file, but a client cannot resolve it.
#[tokio::test]
async fn a_descriptor_set_without_an_import_is_caught() {
    let mut set = prost_types::FileDescriptorSet::decode(ticketing_proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file.retain(|file| file.name() != "google/protobuf/timestamp.proto");
    let reflection =
        tonic_reflection::server::Builder::configure().register_file_descriptor_set(set).build_v1().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(reflection)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();

    let service = "ticketing.v1.SeatLockService";
    let error = resolve(service, v1::by_symbol(&channel, service), |f| {
        let channel = channel.clone();
        async move { v1::by_filename(&channel, &f).await }
    })
    .await
    .unwrap_err();
    assert!(
        error.contains("google/protobuf/timestamp.proto (imported by ticketing/v1/seat_lock.proto)"),
        "{error}"
    );
    server.abort();
}
