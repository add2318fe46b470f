//! What a load run sends: the method, found by name in the mesh's descriptors, and its call
//! data ([`CallData`]), rendered per request from JSON with the [`template`](super::template)
//! actions and encoded to the method's input message.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};

use super::template::{CallContext, Template};

/// The descriptors of every service the mesh serves: the contract and `grpc.health.v1`.
pub fn descriptor_pool() -> anyhow::Result<DescriptorPool> {
    let mut pool = DescriptorPool::decode(ticketing_proto::FILE_DESCRIPTOR_SET)
        .context("the contract's descriptor set does not decode")?;
    pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .context("the health descriptor set does not decode")?;
    Ok(pool)
}

/// Finds a method by full name: `package.Service/Method` (ghz, grpcurl) or
/// `package.Service.Method`.
pub fn find_method(pool: &DescriptorPool, call: &str) -> anyhow::Result<MethodDescriptor> {
    let (service, method) = call
        .rsplit_once('/')
        .or_else(|| call.rsplit_once('.'))
        .with_context(|| format!("{call:?} is not package.Service/Method"))?;
    let service = pool
        .get_service_by_name(service.trim_start_matches('/'))
        .with_context(|| format!("no service {service} in the contract"))?;
    let found = service.methods().find(|m| m.name() == method);
    found.with_context(|| format!("service {} has no method {method}", service.full_name()))
}

/// Turns JSON call data into the encoded input message of `input`.
pub fn encode_json(input: &MessageDescriptor, json: &str) -> anyhow::Result<Bytes> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(input.clone(), &mut deserializer)
        .with_context(|| format!("the data does not fit {}: {json}", input.full_name()))?;
    deserializer.end()?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// One item of the call data: encoded once when it has no template action.
#[derive(Debug, Clone)]
enum Item {
    Fixed(Bytes),
    Templated(Template),
}

/// One metadata entry: parsed once when it has no template action (a bearer token is sent
/// as the same reference-counted value on every call).
#[derive(Debug, Clone)]
enum Meta {
    Fixed(MetadataKey<Ascii>, MetadataValue<Ascii>),
    Templated(MetadataKey<Ascii>, Template),
}

/// The call data of a run: one JSON object, or an array used round robin (request `n` gets
/// item `n % len`, as ghz does for unary calls). The metadata likewise: one object, or an
/// array of objects used round robin (ghz's metadata array, e.g. one token per user from
/// `stack token --users N`).
#[derive(Debug, Clone)]
pub struct CallData {
    method: MethodDescriptor,
    items: Vec<Item>,
    metadata: Vec<Vec<Meta>>,
    /// Full method, method, service, input and output names, for the templates.
    names: [String; 5],
    /// Mints the tokens of `{{token …}}` actions.
    identity: Option<Arc<crate::identity::Identity>>,
}

impl CallData {
    /// Parses the data's templates and encodes what is fixed; fails if an item does not fit
    /// the method's input message (checked with the item rendered for request 0).
    pub fn new(
        method: MethodDescriptor,
        data: &serde_json::Value,
        metadata: Option<&serde_json::Value>,
    ) -> anyhow::Result<Self> {
        let values: Vec<&serde_json::Value> = match data {
            serde_json::Value::Array(items) if !items.is_empty() => items.iter().collect(),
            serde_json::Value::Array(_) => bail!("the data array is empty"),
            serde_json::Value::Null => vec![],
            other => vec![other],
        };
        let mut items = Vec::with_capacity(values.len().max(1));
        for value in values {
            let text = serde_json::to_string(value)?;
            let template = Template::parse(&text)?;
            items.push(if template.is_constant() {
                Item::Fixed(encode_json(&method.input(), &text)?)
            } else {
                Item::Templated(template)
            });
        }
        if items.is_empty() {
            items.push(Item::Fixed(encode_json(&method.input(), "{}")?));
        }
        let objects: Vec<&serde_json::Value> = match metadata {
            None | Some(serde_json::Value::Null) => vec![],
            Some(serde_json::Value::Array(objects)) if objects.is_empty() => {
                bail!("the metadata array is empty")
            }
            Some(serde_json::Value::Array(objects)) => objects.iter().collect(),
            Some(object) => vec![object],
        };
        let mut pairs = Vec::with_capacity(objects.len());
        for object in objects {
            let map = object
                .as_object()
                .context("metadata must be a JSON object of strings, or an array of them")?;
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map {
                let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                let key: MetadataKey<Ascii> =
                    key.to_ascii_lowercase().parse().with_context(|| format!("bad metadata key {key:?}"))?;
                let template = Template::parse(&text)?;
                entries.push(if template.is_constant() {
                    // The value is never printed: it may be a token.
                    let value =
                        text.parse().map_err(|_| anyhow::anyhow!("metadata {key}: not a valid value"))?;
                    Meta::Fixed(key, value)
                } else {
                    Meta::Templated(key, template)
                });
            }
            pairs.push(entries);
        }
        let names = [
            method.full_name().to_owned(),
            method.name().to_owned(),
            method.parent_service().full_name().to_owned(),
            method.input().full_name().to_owned(),
            method.output().full_name().to_owned(),
        ];
        let data = Self { method, items, metadata: pairs, names, identity: None };
        data.encode(0, 0)?;
        Ok(data)
    }

    /// The method this data is for.
    pub fn method(&self) -> &MethodDescriptor {
        &self.method
    }

    /// The encoded request number `request_number`, as `worker_id` sends it.
    pub fn encode(&self, request_number: u64, worker_id: usize) -> anyhow::Result<Bytes> {
        match &self.items[(request_number % self.items.len() as u64) as usize] {
            Item::Fixed(bytes) => Ok(bytes.clone()),
            Item::Templated(template) => {
                let ctx = self.context(request_number, worker_id);
                encode_json(&self.method.input(), &template.render(&ctx))
            }
        }
    }

    /// The request's rendered JSON (for tests and `--dry-run`-like checks).
    pub fn render_json(&self, request_number: u64) -> anyhow::Result<serde_json::Value> {
        let bytes = self.encode(request_number, 0)?;
        let message = DynamicMessage::decode(self.method.input(), bytes)?;
        Ok(serde_json::to_value(&message)?)
    }

    fn context(&self, request_number: u64, worker_id: usize) -> CallContext<'_> {
        CallContext {
            request_number,
            worker_id,
            fully_qualified_name: &self.names[0],
            method_name: &self.names[1],
            service_name: &self.names[2],
            input_name: &self.names[3],
            output_name: &self.names[4],
            identity: self.identity.as_deref(),
        }
    }

    /// Adds request `request_number`'s metadata (object `n % len` of an array) to `request`.
    pub fn attach_metadata<T>(&self, request_number: u64, worker_id: usize, request: &mut tonic::Request<T>) {
        if self.metadata.is_empty() {
            return;
        }
        let entries = &self.metadata[(request_number % self.metadata.len() as u64) as usize];
        for entry in entries {
            match entry {
                Meta::Fixed(key, value) => {
                    request.metadata_mut().insert(key.clone(), value.clone());
                }
                Meta::Templated(key, template) => {
                    let ctx = self.context(request_number, worker_id);
                    if let Ok(value) = template.render(&ctx).parse() {
                        request.metadata_mut().insert(key.clone(), value);
                    }
                }
            }
        }
    }

    /// The same data, with `identity` minting its `{{token …}}` actions.
    pub fn with_identity(self, identity: Arc<crate::identity::Identity>) -> Self {
        Self { identity: Some(identity), ..self }
    }

    /// The same data with other metadata (e.g. the tokens of a bench variant).
    pub fn with_metadata(&self, metadata: &serde_json::Value) -> anyhow::Result<Self> {
        let fresh = Self::new(self.method.clone(), &serde_json::Value::Null, Some(metadata))?;
        Ok(Self { metadata: fresh.metadata, ..self.clone() })
    }
}
