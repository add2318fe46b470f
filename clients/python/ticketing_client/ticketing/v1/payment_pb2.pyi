import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CONFIRMED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_DECLINED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REFUNDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PROCESSING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_PENDING: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REFUNDING: _ClassVar[PaymentStatus]

class BookingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOOKING_STATUS_UNSPECIFIED: _ClassVar[BookingStatus]
    BOOKING_STATUS_CONFIRMED: _ClassVar[BookingStatus]
    BOOKING_STATUS_CANCELLING: _ClassVar[BookingStatus]
    BOOKING_STATUS_CANCELLED: _ClassVar[BookingStatus]

class DiscrepancyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCREPANCY_KIND_UNSPECIFIED: _ClassVar[DiscrepancyKind]
    DISCREPANCY_KIND_CHARGE_WITHOUT_BOOKING: _ClassVar[DiscrepancyKind]
    DISCREPANCY_KIND_CHARGE_SETTLED_TWICE: _ClassVar[DiscrepancyKind]
    DISCREPANCY_KIND_BOOKING_WITHOUT_CHARGE: _ClassVar[DiscrepancyKind]
    DISCREPANCY_KIND_REFUND_MISMATCH: _ClassVar[DiscrepancyKind]
    DISCREPANCY_KIND_AMOUNT_MISMATCH: _ClassVar[DiscrepancyKind]
    DISCREPANCY_KIND_UNEXPECTED_STATUS: _ClassVar[DiscrepancyKind]
    DISCREPANCY_KIND_STUCK: _ClassVar[DiscrepancyKind]
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_CONFIRMED: PaymentStatus
PAYMENT_STATUS_DECLINED: PaymentStatus
PAYMENT_STATUS_REFUNDED: PaymentStatus
PAYMENT_STATUS_PROCESSING: PaymentStatus
PAYMENT_STATUS_PENDING: PaymentStatus
PAYMENT_STATUS_REFUNDING: PaymentStatus
BOOKING_STATUS_UNSPECIFIED: BookingStatus
BOOKING_STATUS_CONFIRMED: BookingStatus
BOOKING_STATUS_CANCELLING: BookingStatus
BOOKING_STATUS_CANCELLED: BookingStatus
DISCREPANCY_KIND_UNSPECIFIED: DiscrepancyKind
DISCREPANCY_KIND_CHARGE_WITHOUT_BOOKING: DiscrepancyKind
DISCREPANCY_KIND_CHARGE_SETTLED_TWICE: DiscrepancyKind
DISCREPANCY_KIND_BOOKING_WITHOUT_CHARGE: DiscrepancyKind
DISCREPANCY_KIND_REFUND_MISMATCH: DiscrepancyKind
DISCREPANCY_KIND_AMOUNT_MISMATCH: DiscrepancyKind
DISCREPANCY_KIND_UNEXPECTED_STATUS: DiscrepancyKind
DISCREPANCY_KIND_STUCK: DiscrepancyKind

class PayRequest(_message.Message):
    __slots__ = ("idempotency_key", "event_id", "hold_id", "user_id", "payment_method")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_METHOD_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    event_id: str
    hold_id: str
    user_id: str
    payment_method: str
    def __init__(self, idempotency_key: _Optional[str] = ..., event_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., user_id: _Optional[str] = ..., payment_method: _Optional[str] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("payment_id", "idempotency_key", "event_id", "hold_id", "user_id", "status", "amount_cents", "currency", "provider_charge_id", "failure_reason", "booking_id", "created_at")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_CHARGE_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    idempotency_key: str
    event_id: str
    hold_id: str
    user_id: str
    status: PaymentStatus
    amount_cents: int
    currency: str
    provider_charge_id: str
    failure_reason: str
    booking_id: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, payment_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., event_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., provider_charge_id: _Optional[str] = ..., failure_reason: _Optional[str] = ..., booking_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Booking(_message.Message):
    __slots__ = ("booking_id", "payment_id", "event_id", "user_id", "hold_id", "zone_id", "seat_ids", "quantity", "amount_cents", "currency", "created_at", "status", "cancelled_at", "cancel_reason")
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    booking_id: str
    payment_id: str
    event_id: str
    user_id: str
    hold_id: str
    zone_id: str
    seat_ids: _containers.RepeatedScalarFieldContainer[str]
    quantity: int
    amount_cents: int
    currency: str
    created_at: _timestamp_pb2.Timestamp
    status: BookingStatus
    cancelled_at: _timestamp_pb2.Timestamp
    cancel_reason: str
    def __init__(self, booking_id: _Optional[str] = ..., payment_id: _Optional[str] = ..., event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., seat_ids: _Optional[_Iterable[str]] = ..., quantity: _Optional[int] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[BookingStatus, str]] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_reason: _Optional[str] = ...) -> None: ...

class PayResponse(_message.Message):
    __slots__ = ("payment", "booking", "replayed")
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    BOOKING_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    booking: Booking
    replayed: bool
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ..., booking: _Optional[_Union[Booking, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id", "user_id")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    user_id: str
    def __init__(self, payment_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetBookingRequest(_message.Message):
    __slots__ = ("booking_id", "user_id")
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    booking_id: str
    user_id: str
    def __init__(self, booking_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListBookingsRequest(_message.Message):
    __slots__ = ("user_id", "event_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    event_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., event_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBookingsResponse(_message.Message):
    __slots__ = ("bookings", "next_page_token")
    BOOKINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bookings: _containers.RepeatedCompositeFieldContainer[Booking]
    next_page_token: str
    def __init__(self, bookings: _Optional[_Iterable[_Union[Booking, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelBookingRequest(_message.Message):
    __slots__ = ("idempotency_key", "booking_id", "user_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    booking_id: str
    user_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., booking_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class RefundBookingRequest(_message.Message):
    __slots__ = ("idempotency_key", "booking_id", "reason")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    booking_id: str
    reason: str
    def __init__(self, idempotency_key: _Optional[str] = ..., booking_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelBookingResponse(_message.Message):
    __slots__ = ("booking", "payment", "replayed")
    BOOKING_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    booking: Booking
    payment: Payment
    replayed: bool
    def __init__(self, booking: _Optional[_Union[Booking, _Mapping]] = ..., payment: _Optional[_Union[Payment, _Mapping]] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ("dry_run",)
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    def __init__(self, dry_run: _Optional[bool] = ...) -> None: ...

class Discrepancy(_message.Message):
    __slots__ = ("kind", "payment_id", "charge_id", "booking_id", "detail", "settled")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHARGE_ID_FIELD_NUMBER: _ClassVar[int]
    BOOKING_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    kind: DiscrepancyKind
    payment_id: str
    charge_id: str
    booking_id: str
    detail: str
    settled: bool
    def __init__(self, kind: _Optional[_Union[DiscrepancyKind, str]] = ..., payment_id: _Optional[str] = ..., charge_id: _Optional[str] = ..., booking_id: _Optional[str] = ..., detail: _Optional[str] = ..., settled: _Optional[bool] = ...) -> None: ...

class ReconcileReport(_message.Message):
    __slots__ = ("charges_checked", "payments_checked", "discrepancies", "truncated", "unsettled", "finished_at")
    CHARGES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    DISCREPANCIES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    charges_checked: int
    payments_checked: int
    discrepancies: _containers.RepeatedCompositeFieldContainer[Discrepancy]
    truncated: bool
    unsettled: int
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, charges_checked: _Optional[int] = ..., payments_checked: _Optional[int] = ..., discrepancies: _Optional[_Iterable[_Union[Discrepancy, _Mapping]]] = ..., truncated: _Optional[bool] = ..., unsettled: _Optional[int] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
