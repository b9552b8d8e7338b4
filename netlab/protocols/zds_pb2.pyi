from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class Version(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOT_USED: _ClassVar[Version]
    V1: _ClassVar[Version]
NOT_USED: Version
V1: Version

class ZdsHello(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: Version
    def __init__(self, version: Version | str | None = ...) -> None: ...

class WorkloadInfo(_message.Message):
    __slots__ = ("name", "namespace", "service_account", "trust_domain")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    service_account: str
    trust_domain: str
    def __init__(self, name: str | None = ..., namespace: str | None = ..., service_account: str | None = ..., trust_domain: str | None = ...) -> None: ...

class AddWorkload(_message.Message):
    __slots__ = ("uid", "workload_info")
    UID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_INFO_FIELD_NUMBER: _ClassVar[int]
    uid: str
    workload_info: WorkloadInfo
    def __init__(self, uid: str | None = ..., workload_info: WorkloadInfo | _Mapping | None = ...) -> None: ...

class KeepWorkload(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: str
    def __init__(self, uid: str | None = ...) -> None: ...

class DelWorkload(_message.Message):
    __slots__ = ("uid",)
    UID_FIELD_NUMBER: _ClassVar[int]
    uid: str
    def __init__(self, uid: str | None = ...) -> None: ...

class SnapshotSent(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkloadRequest(_message.Message):
    __slots__ = ("add", "snapshot_sent", "keep")
    ADD_FIELD_NUMBER: _ClassVar[int]
    DEL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SENT_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    add: AddWorkload
    snapshot_sent: SnapshotSent
    keep: KeepWorkload
    def __init__(self, add: AddWorkload | _Mapping | None = ..., snapshot_sent: SnapshotSent | _Mapping | None = ..., keep: KeepWorkload | _Mapping | None = ..., **kwargs) -> None: ...

class Ack(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: str | None = ...) -> None: ...

class WorkloadResponse(_message.Message):
    __slots__ = ("ack",)
    ACK_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    def __init__(self, ack: Ack | _Mapping | None = ...) -> None: ...
