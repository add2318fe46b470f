import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReleaseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELEASE_REASON_UNSPECIFIED: _ClassVar[ReleaseReason]
    RELEASE_REASON_RELEASED: _ClassVar[ReleaseReason]
    RELEASE_REASON_EXPIRED: _ClassVar[ReleaseReason]
    RELEASE_REASON_CANCELLED: _ClassVar[ReleaseReason]

class PassEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PASS_END_REASON_UNSPECIFIED: _ClassVar[PassEndReason]
    PASS_END_REASON_LEFT: _ClassVar[PassEndReason]
    PASS_END_REASON_BOUGHT: _ClassVar[PassEndReason]
    PASS_END_REASON_ABANDONED: _ClassVar[PassEndReason]
RELEASE_REASON_UNSPECIFIED: ReleaseReason
RELEASE_REASON_RELEASED: ReleaseReason
RELEASE_REASON_EXPIRED: ReleaseReason
RELEASE_REASON_CANCELLED: ReleaseReason
PASS_END_REASON_UNSPECIFIED: PassEndReason
PASS_END_REASON_LEFT: PassEndReason
PASS_END_REASON_BOUGHT: PassEndReason
PASS_END_REASON_ABANDONED: PassEndReason

class EventEnvelope(_message.Message):
    __slots__ = ("message_id", "occurred_at", "admitted", "seats_held", "seats_released", "booking_confirmed", "payment_failed", "refunded", "booking_cancelled", "pass_ended")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    SEATS_HELD_FIELD_NUMBER: _ClassVar[int]
    SEATS_RELEASED_FIELD_NUMBER: _ClassVar[int]
    BOOKING_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FAILED_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    BOOKING_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PASS_ENDED_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    occurred_at: _timestamp_pb2.Timestamp
    admitted: Admitted
    seats_held: SeatsHeld
    seats_released: SeatsReleased
    booking_confirmed: BookingConfirmed
    payment_failed: PaymentFailed
    refunded: Refunded
    booking_cancelled: BookingCancelled
    pass_ended: PassEnded
    def __init__(self, message_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., admitted: _Optional[_Union[Admitted, _Mapping]] = ..., seats_held: _Optional[_Union[SeatsHeld, _Mapping]] = ..., seats_released: _Optional[_Union[SeatsReleased, _Mapping]] = ..., booking_confirmed: _Optional[_Union[BookingConfirmed, _Mapping]] = ..., payment_failed: _Optional[_Union[PaymentFailed, _Mapping]] = ..., refunded: _Optional[_Union[Refunded, _Mapping]] = ..., booking_cancelled: _Optional[_Union[BookingCancelled, _Mapping]] = ..., pass_ended: _Optional[_Union[PassEnded, _Mapping]] = ...) -> None: ...

class Admitted(_message.Message):
    __slots__ = ("event_id", "user_id", "pass_id", "pass_expires_at", "ticket")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PASS_ID_FIELD_NUMBER: _ClassVar[int]
    PASS_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    pass_id: str
    pass_expires_at: _timestamp_pb2.Timestamp
    ticket: int
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., pass_id: _Optional[str] = ..., pass_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ticket: _Optional[int] = ...) -> None: ...

class SeatsHeld(_message.Message):
    __slots__ = ("event_id", "user_id", "hold_id", "zone_id", "seat_ids", "quantity", "expires_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    hold_id: str
    zone_id: str
    seat_ids: _containers.RepeatedScalarFieldContainer[str]
    quantity: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., seat_ids: _Optional[_Iterable[str]] = ..., quantity: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SeatsReleased(_message.Message):
    __slots__ = ("event_id", "user_id", "hold_id", "zone_id", "seat_ids", "quantity", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    hold_id: str
    zone_id: str
    seat_ids: _containers.RepeatedScalarFieldContainer[str]
    quantity: int
    reason: ReleaseReason
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., seat_ids: _Optional[_Iterable[str]] = ..., quantity: _Optional[int] = ..., reason: _Optional[_Union[ReleaseReason, str]] = ...) -> None: ...

class BookingConfirmed(_message.Message):
    __slots__ = ("event_id", "user_id", "booking_id", "payment_id", "hold_id", "zone_id", "seat_ids", "quantity", "amount_cents", "currency")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    booking_id: str
    payment_id: str
    hold_id: str
    zone_id: str
    seat_ids: _containers.RepeatedScalarFieldContainer[str]
    quantity: int
    amount_cents: int
    currency: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., booking_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., seat_ids: _Optional[_Iterable[str]] = ..., quantity: _Optional[int] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class PaymentFailed(_message.Message):
    __slots__ = ("event_id", "user_id", "payment_id", "hold_id", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    payment_id: str
    hold_id: str
    reason: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Refunded(_message.Message):
    __slots__ = ("event_id", "user_id", "payment_id", "hold_id", "amount_cents", "currency", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    payment_id: str
    hold_id: str
    amount_cents: int
    currency: str
    reason: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BookingCancelled(_message.Message):
    __slots__ = ("event_id", "user_id", "booking_id", "payment_id", "hold_id", "zone_id", "seat_ids", "quantity", "amount_cents", "currency", "reason", "by_operator")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BY_OPERATOR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    booking_id: str
    payment_id: str
    hold_id: str
    zone_id: str
    seat_ids: _containers.RepeatedScalarFieldContainer[str]
    quantity: int
    amount_cents: int
    currency: str
    reason: str
    by_operator: bool
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., booking_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., seat_ids: _Optional[_Iterable[str]] = ..., quantity: _Optional[int] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., reason: _Optional[str] = ..., by_operator: _Optional[bool] = ...) -> None: ...

class PassEnded(_message.Message):
    __slots__ = ("event_id", "user_id", "pass_id", "reason", "expires_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PASS_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    pass_id: str
    reason: PassEndReason
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., pass_id: _Optional[str] = ..., reason: _Optional[_Union[PassEndReason, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
