//! The commands, their gRPC calls and the exit code of each failure.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use service_runtime::{auth::bearer, status::reason};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, payment_service_client::PaymentServiceClient,
};
use tonic::{Code, Request, Status, transport::Channel};

use crate::{audit::AuditArgs, output, venue};

const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  any other failure (the service failed: INTERNAL, RESOURCE_EXHAUSTED, ...)
  2  bad arguments (unknown command or flag, missing EVENT, malformed --target, a venue
     file that cannot be read or is not a venue)
  3  refused by the service: INVALID_ARGUMENT, FAILED_PRECONDITION (e.g. the sale is
     closed), PERMISSION_DENIED (the token lacks the admin scope), UNAUTHENTICATED (no or a
     bad token), ALREADY_EXISTS
  4  unreachable: cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED
  5  not found: the event, zone, venue or booking named does not exist (NOT_FOUND)
`ticketctl audit` exits with admission-audit's codes instead (see `ticketctl audit --help`).";

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
    /// A user's bookings (payment).
    #[command(subcommand, after_help = EXIT_CODES)]
    Bookings(BookingsCommand),
    /// Refund a booking and cancel it: the whole charge goes back through the provider, the
    /// seats go back on sale and the user is told why (payment's RefundBooking). At any time,
    /// whatever the event's cancellation cutoff.
    #[command(after_help = EXIT_CODES)]
    Refund(RefundArgs),
    /// Audit an event's opening with `admission-audit` (found beside ticketctl or on PATH):
    /// its admissions in the stream against the published shuffle key.
    #[command(after_help = crate::audit::EXIT_CODES)]
    Audit(AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum BookingsCommand {
    /// A user's bookings, newest first: status, zone, seats, amount.
    #[command(after_help = EXIT_CODES)]
    List(ListBookingsArgs),
}

/// The most bookings `bookings list` asks for in one page (payment's own cap is higher).
const BOOKINGS_PAGE_SIZE: u32 = 100;

#[derive(Debug, Args)]
pub struct ListBookingsArgs {
    /// The user whose bookings are listed (the token's subject when left out).
    #[arg(long = "user", value_name = "USER")]
    pub user_id: Option<String>,
    /// Only the bookings of this event.
    #[arg(long = "event", value_name = "EVENT")]
    pub event_id: Option<String>,
    /// List at most this many (newest first); 0 lists them all, page by page.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct RefundArgs {
    /// The booking id (a UUID; see `bookings list`).
    #[arg(value_name = "BOOKING")]
    pub booking_id: String,
    /// Why, told to the user (1-200 characters).
    #[arg(long, default_value = "refunded by the organiser")]
    pub reason: String,
    /// The refund's idempotency key (8-128 of [A-Za-z0-9_-]). The default,
    /// `ticketctl-refund-BOOKING`, makes a rerun (after a timeout, say) answer the first
    /// refund instead of starting another; a rerun with another --reason is then refused.
    #[arg(long)]
    pub idempotency_key: Option<String>,
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
    /// The sale's state, queue length, passes issued, active passes, the admission rate and
    /// the estimated wait at the back of the queue.
    #[command(after_help = EXIT_CODES)]
    Show(EventArg),
}

#[derive(Debug, Subcommand)]
pub enum SeatsCommand {
    /// Per-zone availability: capacity, free, held, sold; with --zone also that zone's seat
    /// map, one character per seat (`.` free, `h` held, `X` sold).
    #[command(after_help = EXIT_CODES)]
    Show(SeatsShowArgs),
}

/// Longest seat-map line accepted, in seats: wider than any terminal is of no use.
const MAX_MAP_WIDTH: u32 = 1_000;

#[derive(Debug, Args)]
pub struct SeatsShowArgs {
    /// The event id (a UUID).
    #[arg(value_name = "EVENT")]
    pub event_id: String,
    /// Also print this zone's seat map (a seated zone; a general-admission zone has no seats).
    #[arg(long = "zone", value_name = "ZONE")]
    pub zone_id: Option<String>,
    /// Seats per line of the map: a longer row continues on the next line.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=i64::from(MAX_MAP_WIDTH)))]
    pub width: u32,
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
    /// What the command named does not exist (exit 5).
    NotFound(Status),
    /// The mesh could not be reached or did not answer in time (exit 4).
    Unreachable(String),
    /// Bad input the service was never asked about, such as a venue file (exit 2).
    BadInput(String),
    /// Anything else (exit 1).
    Failed(String),
    /// A program ticketctl runs (admission-audit) cannot be found or started (exit 127).
    Missing(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Failed(_) => 1,
            Self::BadInput(_) => 2,
            Self::Refused(_) => 3,
            Self::Unreachable(_) => 4,
            Self::NotFound(_) => 5,
            Self::Missing(_) => crate::audit::EXIT_MISSING,
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
            Self::NotFound(status) => {
                let why = reason(status).map(|(reason, _)| format!(" ({reason})")).unwrap_or_default();
                write!(f, "not found: {:?}{why}: {}", status.code(), status.message())
            }
            Self::Unreachable(message) => write!(f, "unreachable: {message}"),
            Self::Failed(message) => write!(f, "failed: {message}"),
            Self::BadInput(message) => write!(f, "bad input: {message}"),
            Self::Missing(message) => write!(f, "missing: {message}"),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::NotFound => Self::NotFound(status),
            Code::InvalidArgument
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

    fn payment(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(self.channel.clone())
    }
}

/// What a command that did not fail leaves to `main`.
#[derive(Debug)]
pub enum Done {
    /// Print this and exit 0.
    Printed(String),
    /// A command run for us (`audit`) printed its own answer and ended with this code.
    Exited(u8),
}

/// Runs the command.
pub async fn run(cli: &Cli) -> Result<Done, Failure> {
    let mesh = Mesh::new(cli)?;
    let json = cli.json;
    let printed = match &cli.command {
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
        Command::Seats(SeatsCommand::Show(args)) => {
            let request = mesh.request(pb::GetAvailabilityRequest { event_id: args.event_id.clone() });
            let availability = mesh.inventory().get_availability(request).await?.into_inner();
            match &args.zone_id {
                None => Ok(output::availability(&availability, None, json)),
                Some(zone_id) => {
                    let zone = zone_map(&mesh, &args.event_id, zone_id).await?;
                    let states = zone.decode_seat_states().map_err(|e| {
                        Failure::Failed(format!("zone {zone_id}'s seat map does not decode: {e}"))
                    })?;
                    let map = output::SeatMap { zone: &zone, states: &states, width: args.width as usize };
                    Ok(output::availability(&availability, Some(&map), json))
                }
            }
        }
        Command::Bookings(BookingsCommand::List(args)) => {
            let mut bookings = Vec::new();
            let mut page_token = String::new();
            loop {
                let want = match args.limit {
                    0 => BOOKINGS_PAGE_SIZE,
                    limit => {
                        u32::try_from(limit - bookings.len()).unwrap_or(u32::MAX).min(BOOKINGS_PAGE_SIZE)
                    }
                };
                let request = mesh.request(pb::ListBookingsRequest {
                    user_id: args.user_id.clone().unwrap_or_default(),
                    event_id: args.event_id.clone().unwrap_or_default(),
                    page_size: want,
                    page_token,
                });
                let page = mesh.payment().list_bookings(request).await?.into_inner();
                bookings.extend(page.bookings);
                if args.limit != 0 && bookings.len() >= args.limit {
                    bookings.truncate(args.limit);
                    break;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Ok(output::bookings(&bookings, json))
        }
        Command::Refund(args) => {
            let request = mesh.request(pb::RefundBookingRequest {
                idempotency_key: args
                    .idempotency_key
                    .clone()
                    .unwrap_or_else(|| format!("ticketctl-refund-{}", args.booking_id)),
                booking_id: args.booking_id.clone(),
                reason: args.reason.clone(),
            });
            let answer = mesh.payment().refund_booking(request).await?.into_inner();
            Ok(output::refund(&answer, json))
        }
        Command::Audit(args) => return crate::audit::run(args, json).map(Done::Exited),
    };
    printed.map(Done::Printed)
}

/// One zone's seat map (inventory's GetSeatMap of that zone).
async fn zone_map(mesh: &Mesh, event_id: &str, zone_id: &str) -> Result<pb::ZoneSeatMap, Failure> {
    let request =
        mesh.request(pb::GetSeatMapRequest { event_id: event_id.to_owned(), zone_id: zone_id.to_owned() });
    let map = mesh.inventory().get_seat_map(request).await?.into_inner();
    map.zones
        .into_iter()
        .find(|zone| zone.zone_id == zone_id)
        .ok_or_else(|| Failure::Failed(format!("the seat map answered carries no zone {zone_id}")))
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
            (Code::NotFound, 5),
            (Code::Aborted, 1),
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
