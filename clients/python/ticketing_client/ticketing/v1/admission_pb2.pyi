import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SaleState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SALE_STATE_UNSPECIFIED: _ClassVar[SaleState]
    SALE_STATE_NOT_OPEN: _ClassVar[SaleState]
    SALE_STATE_OPEN: _ClassVar[SaleState]
    SALE_STATE_PAUSED: _ClassVar[SaleState]
    SALE_STATE_CLOSED: _ClassVar[SaleState]

class QueueState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUEUE_STATE_UNSPECIFIED: _ClassVar[QueueState]
    QUEUE_STATE_PRE_QUEUE: _ClassVar[QueueState]
    QUEUE_STATE_WAITING: _ClassVar[QueueState]
    QUEUE_STATE_ADMITTED: _ClassVar[QueueState]
SALE_STATE_UNSPECIFIED: SaleState
SALE_STATE_NOT_OPEN: SaleState
SALE_STATE_OPEN: SaleState
SALE_STATE_PAUSED: SaleState
SALE_STATE_CLOSED: SaleState
QUEUE_STATE_UNSPECIFIED: QueueState
QUEUE_STATE_PRE_QUEUE: QueueState
QUEUE_STATE_WAITING: QueueState
QUEUE_STATE_ADMITTED: QueueState

class SaleControlRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class SaleStatus(_message.Message):
    __slots__ = ("event_id", "state", "queue_length", "admitted_total", "active_passes", "sale_opens_at", "admission_rate", "estimated_wait_seconds")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PASSES_FIELD_NUMBER: _ClassVar[int]
    SALE_OPENS_AT_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_RATE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    state: SaleState
    queue_length: int
    admitted_total: int
    active_passes: int
    sale_opens_at: _timestamp_pb2.Timestamp
    admission_rate: float
    estimated_wait_seconds: int
    def __init__(self, event_id: _Optional[str] = ..., state: _Optional[_Union[SaleState, str]] = ..., queue_length: _Optional[int] = ..., admitted_total: _Optional[int] = ..., active_passes: _Optional[int] = ..., sale_opens_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., admission_rate: _Optional[float] = ..., estimated_wait_seconds: _Optional[int] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("event_id", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class WatchQueueRequest(_message.Message):
    __slots__ = ("event_id", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetQueueStatusRequest(_message.Message):
    __slots__ = ("event_id", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("event_id", "user_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ("left",)
    LEFT_FIELD_NUMBER: _ClassVar[int]
    left: bool
    def __init__(self, left: _Optional[bool] = ...) -> None: ...

class QueueStatus(_message.Message):
    __slots__ = ("event_id", "user_id", "state", "ticket", "position", "queue_length", "estimated_wait_seconds", "sale_opens_at")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PASS_FIELD_NUMBER: _ClassVar[int]
    SALE_OPENS_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    state: QueueState
    ticket: int
    position: int
    queue_length: int
    estimated_wait_seconds: int
    sale_opens_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., state: _Optional[_Union[QueueState, str]] = ..., ticket: _Optional[int] = ..., position: _Optional[int] = ..., queue_length: _Optional[int] = ..., estimated_wait_seconds: _Optional[int] = ..., sale_opens_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., **kwargs) -> None: ...

class Pass(_message.Message):
    __slots__ = ("token", "pass_id", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PASS_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    pass_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., pass_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PassClaims(_message.Message):
    __slots__ = ("key_id", "event_id", "user_id", "pass_id", "expires_at_ms")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PASS_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    event_id: str
    user_id: str
    pass_id: str
    expires_at_ms: int
    def __init__(self, key_id: _Optional[str] = ..., event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., pass_id: _Optional[str] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...
