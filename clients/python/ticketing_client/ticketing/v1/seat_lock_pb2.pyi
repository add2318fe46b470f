import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HoldState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLD_STATE_UNSPECIFIED: _ClassVar[HoldState]
    HOLD_STATE_HELD: _ClassVar[HoldState]
    HOLD_STATE_CHECKOUT: _ClassVar[HoldState]
    HOLD_STATE_SOLD: _ClassVar[HoldState]
    HOLD_STATE_RELEASED: _ClassVar[HoldState]
    HOLD_STATE_EXPIRED: _ClassVar[HoldState]
HOLD_STATE_UNSPECIFIED: HoldState
HOLD_STATE_HELD: HoldState
HOLD_STATE_CHECKOUT: HoldState
HOLD_STATE_SOLD: HoldState
HOLD_STATE_RELEASED: HoldState
HOLD_STATE_EXPIRED: HoldState

class Hold(_message.Message):
    __slots__ = ("hold_id", "event_id", "user_id", "zone_id", "seat_ids", "quantity", "state", "expires_at", "total_price_cents", "currency")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    event_id: str
    user_id: str
    zone_id: str
    seat_ids: _containers.RepeatedScalarFieldContainer[str]
    quantity: int
    state: HoldState
    expires_at: _timestamp_pb2.Timestamp
    total_price_cents: int
    currency: str
    def __init__(self, hold_id: _Optional[str] = ..., event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., seat_ids: _Optional[_Iterable[str]] = ..., quantity: _Optional[int] = ..., state: _Optional[_Union[HoldState, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total_price_cents: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class HoldSeatsRequest(_message.Message):
    __slots__ = ("pass_token", "event_id", "user_id", "seat_ids")
    PASS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_IDS_FIELD_NUMBER: _ClassVar[int]
    pass_token: str
    event_id: str
    user_id: str
    seat_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pass_token: _Optional[str] = ..., event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., seat_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HoldBestAvailableRequest(_message.Message):
    __slots__ = ("pass_token", "event_id", "user_id", "zone_id", "quantity", "allow_split")
    PASS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPLIT_FIELD_NUMBER: _ClassVar[int]
    pass_token: str
    event_id: str
    user_id: str
    zone_id: str
    quantity: int
    allow_split: bool
    def __init__(self, pass_token: _Optional[str] = ..., event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., quantity: _Optional[int] = ..., allow_split: _Optional[bool] = ...) -> None: ...

class ReleaseHoldRequest(_message.Message):
    __slots__ = ("event_id", "hold_id", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    hold_id: str
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ReleaseHoldResponse(_message.Message):
    __slots__ = ("hold",)
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ...) -> None: ...

class GetHoldRequest(_message.Message):
    __slots__ = ("event_id", "hold_id", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    hold_id: str
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., hold_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...
