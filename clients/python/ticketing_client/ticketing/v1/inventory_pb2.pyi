import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ZoneKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ZONE_KIND_UNSPECIFIED: _ClassVar[ZoneKind]
    ZONE_KIND_SEATED: _ClassVar[ZoneKind]
    ZONE_KIND_GENERAL_ADMISSION: _ClassVar[ZoneKind]

class SeatState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEAT_STATE_UNSPECIFIED: _ClassVar[SeatState]
    SEAT_STATE_FREE: _ClassVar[SeatState]
    SEAT_STATE_HELD: _ClassVar[SeatState]
    SEAT_STATE_SOLD: _ClassVar[SeatState]

class SeatStatesEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEAT_STATES_ENCODING_UNSPECIFIED: _ClassVar[SeatStatesEncoding]
    SEAT_STATES_ENCODING_PACKED: _ClassVar[SeatStatesEncoding]
    SEAT_STATES_ENCODING_RUNS: _ClassVar[SeatStatesEncoding]
ZONE_KIND_UNSPECIFIED: ZoneKind
ZONE_KIND_SEATED: ZoneKind
ZONE_KIND_GENERAL_ADMISSION: ZoneKind
SEAT_STATE_UNSPECIFIED: SeatState
SEAT_STATE_FREE: SeatState
SEAT_STATE_HELD: SeatState
SEAT_STATE_SOLD: SeatState
SEAT_STATES_ENCODING_UNSPECIFIED: SeatStatesEncoding
SEAT_STATES_ENCODING_PACKED: SeatStatesEncoding
SEAT_STATES_ENCODING_RUNS: SeatStatesEncoding

class ZoneSpec(_message.Message):
    __slots__ = ("zone_id", "name", "price_cents", "seated", "general_admission")
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    SEATED_FIELD_NUMBER: _ClassVar[int]
    GENERAL_ADMISSION_FIELD_NUMBER: _ClassVar[int]
    zone_id: str
    name: str
    price_cents: int
    seated: SeatedLayout
    general_admission: GeneralAdmissionLayout
    def __init__(self, zone_id: _Optional[str] = ..., name: _Optional[str] = ..., price_cents: _Optional[int] = ..., seated: _Optional[_Union[SeatedLayout, _Mapping]] = ..., general_admission: _Optional[_Union[GeneralAdmissionLayout, _Mapping]] = ...) -> None: ...

class SeatedLayout(_message.Message):
    __slots__ = ("row_labels", "seats_per_row", "accessible_seat_ids")
    ROW_LABELS_FIELD_NUMBER: _ClassVar[int]
    SEATS_PER_ROW_FIELD_NUMBER: _ClassVar[int]
    ACCESSIBLE_SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    row_labels: _containers.RepeatedScalarFieldContainer[str]
    seats_per_row: int
    accessible_seat_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, row_labels: _Optional[_Iterable[str]] = ..., seats_per_row: _Optional[int] = ..., accessible_seat_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GeneralAdmissionLayout(_message.Message):
    __slots__ = ("capacity",)
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    capacity: int
    def __init__(self, capacity: _Optional[int] = ...) -> None: ...

class Zone(_message.Message):
    __slots__ = ("zone_id", "name", "kind", "price_cents", "row_labels", "seats_per_row", "accessible_seat_ids", "capacity")
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    ROW_LABELS_FIELD_NUMBER: _ClassVar[int]
    SEATS_PER_ROW_FIELD_NUMBER: _ClassVar[int]
    ACCESSIBLE_SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    zone_id: str
    name: str
    kind: ZoneKind
    price_cents: int
    row_labels: _containers.RepeatedScalarFieldContainer[str]
    seats_per_row: int
    accessible_seat_ids: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    def __init__(self, zone_id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[ZoneKind, str]] = ..., price_cents: _Optional[int] = ..., row_labels: _Optional[_Iterable[str]] = ..., seats_per_row: _Optional[int] = ..., accessible_seat_ids: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ...) -> None: ...

class Venue(_message.Message):
    __slots__ = ("venue_id", "name", "zones", "total_capacity")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    name: str
    zones: _containers.RepeatedCompositeFieldContainer[Zone]
    total_capacity: int
    def __init__(self, venue_id: _Optional[str] = ..., name: _Optional[str] = ..., zones: _Optional[_Iterable[_Union[Zone, _Mapping]]] = ..., total_capacity: _Optional[int] = ...) -> None: ...

class CreateVenueRequest(_message.Message):
    __slots__ = ("name", "zones")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    name: str
    zones: _containers.RepeatedCompositeFieldContainer[ZoneSpec]
    def __init__(self, name: _Optional[str] = ..., zones: _Optional[_Iterable[_Union[ZoneSpec, _Mapping]]] = ...) -> None: ...

class CreateVenueResponse(_message.Message):
    __slots__ = ("venue",)
    VENUE_FIELD_NUMBER: _ClassVar[int]
    venue: Venue
    def __init__(self, venue: _Optional[_Union[Venue, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "venue_id", "name", "starts_at", "sale_opens_at", "max_tickets_per_user", "currency", "admission_capacity", "admission_tick_ms", "pass_ttl_seconds", "zones", "total_capacity", "cancellation_cutoff_seconds")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    SALE_OPENS_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_TICKETS_PER_USER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_TICK_MS_FIELD_NUMBER: _ClassVar[int]
    PASS_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_CUTOFF_SECONDS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    venue_id: str
    name: str
    starts_at: _timestamp_pb2.Timestamp
    sale_opens_at: _timestamp_pb2.Timestamp
    max_tickets_per_user: int
    currency: str
    admission_capacity: int
    admission_tick_ms: int
    pass_ttl_seconds: int
    zones: _containers.RepeatedCompositeFieldContainer[Zone]
    total_capacity: int
    cancellation_cutoff_seconds: int
    def __init__(self, event_id: _Optional[str] = ..., venue_id: _Optional[str] = ..., name: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sale_opens_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_tickets_per_user: _Optional[int] = ..., currency: _Optional[str] = ..., admission_capacity: _Optional[int] = ..., admission_tick_ms: _Optional[int] = ..., pass_ttl_seconds: _Optional[int] = ..., zones: _Optional[_Iterable[_Union[Zone, _Mapping]]] = ..., total_capacity: _Optional[int] = ..., cancellation_cutoff_seconds: _Optional[int] = ...) -> None: ...

class CreateEventRequest(_message.Message):
    __slots__ = ("venue_id", "name", "starts_at", "sale_opens_at", "max_tickets_per_user", "currency", "admission_capacity", "admission_tick_ms", "pass_ttl_seconds", "cancellation_cutoff_seconds")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    SALE_OPENS_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_TICKETS_PER_USER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_TICK_MS_FIELD_NUMBER: _ClassVar[int]
    PASS_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_CUTOFF_SECONDS_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    name: str
    starts_at: _timestamp_pb2.Timestamp
    sale_opens_at: _timestamp_pb2.Timestamp
    max_tickets_per_user: int
    currency: str
    admission_capacity: int
    admission_tick_ms: int
    pass_ttl_seconds: int
    cancellation_cutoff_seconds: int
    def __init__(self, venue_id: _Optional[str] = ..., name: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sale_opens_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_tickets_per_user: _Optional[int] = ..., currency: _Optional[str] = ..., admission_capacity: _Optional[int] = ..., admission_tick_ms: _Optional[int] = ..., pass_ttl_seconds: _Optional[int] = ..., cancellation_cutoff_seconds: _Optional[int] = ...) -> None: ...

class CreateEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class GetEventRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class GetEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ZoneSeatMap(_message.Message):
    __slots__ = ("zone_id", "kind", "row_labels", "seats_per_row", "seat_states", "seat_states_encoding", "capacity", "free", "held", "sold")
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROW_LABELS_FIELD_NUMBER: _ClassVar[int]
    SEATS_PER_ROW_FIELD_NUMBER: _ClassVar[int]
    SEAT_STATES_FIELD_NUMBER: _ClassVar[int]
    SEAT_STATES_ENCODING_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    SOLD_FIELD_NUMBER: _ClassVar[int]
    zone_id: str
    kind: ZoneKind
    row_labels: _containers.RepeatedScalarFieldContainer[str]
    seats_per_row: int
    seat_states: bytes
    seat_states_encoding: SeatStatesEncoding
    capacity: int
    free: int
    held: int
    sold: int
    def __init__(self, zone_id: _Optional[str] = ..., kind: _Optional[_Union[ZoneKind, str]] = ..., row_labels: _Optional[_Iterable[str]] = ..., seats_per_row: _Optional[int] = ..., seat_states: _Optional[bytes] = ..., seat_states_encoding: _Optional[_Union[SeatStatesEncoding, str]] = ..., capacity: _Optional[int] = ..., free: _Optional[int] = ..., held: _Optional[int] = ..., sold: _Optional[int] = ...) -> None: ...

class GetSeatMapRequest(_message.Message):
    __slots__ = ("event_id", "zone_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    zone_id: str
    def __init__(self, event_id: _Optional[str] = ..., zone_id: _Optional[str] = ...) -> None: ...

class GetSeatMapResponse(_message.Message):
    __slots__ = ("event_id", "zones", "version")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    zones: _containers.RepeatedCompositeFieldContainer[ZoneSeatMap]
    version: int
    def __init__(self, event_id: _Optional[str] = ..., zones: _Optional[_Iterable[_Union[ZoneSeatMap, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class ZoneAvailability(_message.Message):
    __slots__ = ("zone_id", "kind", "price_cents", "capacity", "free", "held", "sold")
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    SOLD_FIELD_NUMBER: _ClassVar[int]
    zone_id: str
    kind: ZoneKind
    price_cents: int
    capacity: int
    free: int
    held: int
    sold: int
    def __init__(self, zone_id: _Optional[str] = ..., kind: _Optional[_Union[ZoneKind, str]] = ..., price_cents: _Optional[int] = ..., capacity: _Optional[int] = ..., free: _Optional[int] = ..., held: _Optional[int] = ..., sold: _Optional[int] = ...) -> None: ...

class GetAvailabilityRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class GetAvailabilityResponse(_message.Message):
    __slots__ = ("event_id", "zones", "version")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    zones: _containers.RepeatedCompositeFieldContainer[ZoneAvailability]
    version: int
    def __init__(self, event_id: _Optional[str] = ..., zones: _Optional[_Iterable[_Union[ZoneAvailability, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class WatchSeatMapRequest(_message.Message):
    __slots__ = ("event_id", "zone_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    zone_id: str
    def __init__(self, event_id: _Optional[str] = ..., zone_id: _Optional[str] = ...) -> None: ...

class SeatChange(_message.Message):
    __slots__ = ("zone_id", "seat_id", "state")
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    zone_id: str
    seat_id: str
    state: SeatState
    def __init__(self, zone_id: _Optional[str] = ..., seat_id: _Optional[str] = ..., state: _Optional[_Union[SeatState, str]] = ...) -> None: ...

class SeatMapUpdate(_message.Message):
    __slots__ = ("snapshot", "delta")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    snapshot: GetSeatMapResponse
    delta: SeatMapDelta
    def __init__(self, snapshot: _Optional[_Union[GetSeatMapResponse, _Mapping]] = ..., delta: _Optional[_Union[SeatMapDelta, _Mapping]] = ...) -> None: ...

class SeatMapDelta(_message.Message):
    __slots__ = ("event_id", "changes", "availability", "version")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    changes: _containers.RepeatedCompositeFieldContainer[SeatChange]
    availability: _containers.RepeatedCompositeFieldContainer[ZoneAvailability]
    version: int
    def __init__(self, event_id: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[SeatChange, _Mapping]]] = ..., availability: _Optional[_Iterable[_Union[ZoneAvailability, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...
