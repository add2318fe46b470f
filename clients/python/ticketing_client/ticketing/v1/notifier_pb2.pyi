import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ticketing_client.ticketing.events.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NotificationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_KIND_UNSPECIFIED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_ADMITTED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_HOLD_EXPIRED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_BOOKING_CONFIRMED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_PAYMENT_FAILED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_REFUNDED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_BOOKING_CANCELLED: _ClassVar[NotificationKind]
NOTIFICATION_KIND_UNSPECIFIED: NotificationKind
NOTIFICATION_KIND_ADMITTED: NotificationKind
NOTIFICATION_KIND_HOLD_EXPIRED: NotificationKind
NOTIFICATION_KIND_BOOKING_CONFIRMED: NotificationKind
NOTIFICATION_KIND_PAYMENT_FAILED: NotificationKind
NOTIFICATION_KIND_REFUNDED: NotificationKind
NOTIFICATION_KIND_BOOKING_CANCELLED: NotificationKind

class Notification(_message.Message):
    __slots__ = ("notification_id", "user_id", "kind", "event_id", "message_id", "created_at", "source")
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    notification_id: int
    user_id: str
    kind: NotificationKind
    event_id: str
    message_id: str
    created_at: _timestamp_pb2.Timestamp
    source: _events_pb2.EventEnvelope
    def __init__(self, notification_id: _Optional[int] = ..., user_id: _Optional[str] = ..., kind: _Optional[_Union[NotificationKind, str]] = ..., event_id: _Optional[str] = ..., message_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[_events_pb2.EventEnvelope, _Mapping]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("user_id", "after_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    after_id: int
    def __init__(self, user_id: _Optional[str] = ..., after_id: _Optional[int] = ...) -> None: ...

class ListNotificationsRequest(_message.Message):
    __slots__ = ("user_id", "after_id", "page_size")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    after_id: int
    page_size: int
    def __init__(self, user_id: _Optional[str] = ..., after_id: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListNotificationsResponse(_message.Message):
    __slots__ = ("notifications", "next_after_id")
    NOTIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    notifications: _containers.RepeatedCompositeFieldContainer[Notification]
    next_after_id: int
    def __init__(self, notifications: _Optional[_Iterable[_Union[Notification, _Mapping]]] = ..., next_after_id: _Optional[int] = ...) -> None: ...

class RegisterWebhookRequest(_message.Message):
    __slots__ = ("user_id", "url", "secret", "kinds")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    url: str
    secret: str
    kinds: _containers.RepeatedScalarFieldContainer[NotificationKind]
    def __init__(self, user_id: _Optional[str] = ..., url: _Optional[str] = ..., secret: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[NotificationKind, str]]] = ...) -> None: ...

class RegisterWebhookResponse(_message.Message):
    __slots__ = ("webhook_id",)
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    def __init__(self, webhook_id: _Optional[str] = ...) -> None: ...
