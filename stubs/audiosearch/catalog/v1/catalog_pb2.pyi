import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATE_UNSPECIFIED: _ClassVar[ItemState]
    ITEM_STATE_PENDING: _ClassVar[ItemState]
    ITEM_STATE_READY: _ClassVar[ItemState]
    ITEM_STATE_DELETING: _ClassVar[ItemState]
ITEM_STATE_UNSPECIFIED: ItemState
ITEM_STATE_PENDING: ItemState
ITEM_STATE_READY: ItemState
ITEM_STATE_DELETING: ItemState

class Library(_message.Message):
    __slots__ = ("id", "name", "model_name", "model_dim", "description", "create_time", "window_seconds", "hop_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    model_name: str
    model_dim: int
    description: str
    create_time: _timestamp_pb2.Timestamp
    window_seconds: float
    hop_seconds: float
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., model_name: _Optional[str] = ..., model_dim: _Optional[int] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "library", "name", "source_uri", "sha256", "duration_seconds", "sample_rate", "channels", "user_tags", "auto_tags", "create_time", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    USER_TAGS_FIELD_NUMBER: _ClassVar[int]
    AUTO_TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    library: str
    name: str
    source_uri: str
    sha256: str
    duration_seconds: float
    sample_rate: int
    channels: int
    user_tags: _containers.RepeatedScalarFieldContainer[str]
    auto_tags: _containers.RepeatedCompositeFieldContainer[Tag]
    create_time: _timestamp_pb2.Timestamp
    state: ItemState
    def __init__(self, id: _Optional[int] = ..., library: _Optional[str] = ..., name: _Optional[str] = ..., source_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., user_tags: _Optional[_Iterable[str]] = ..., auto_tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[ItemState, str]] = ...) -> None: ...

class CreateLibraryRequest(_message.Message):
    __slots__ = ("name", "model_name", "model_dim", "description", "window_seconds", "hop_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_name: str
    model_dim: int
    description: str
    window_seconds: float
    hop_seconds: float
    def __init__(self, name: _Optional[str] = ..., model_name: _Optional[str] = ..., model_dim: _Optional[int] = ..., description: _Optional[str] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ...) -> None: ...

class CreateLibraryResponse(_message.Message):
    __slots__ = ("library",)
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library: Library
    def __init__(self, library: _Optional[_Union[Library, _Mapping]] = ...) -> None: ...

class GetLibraryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetLibraryResponse(_message.Message):
    __slots__ = ("library",)
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library: Library
    def __init__(self, library: _Optional[_Union[Library, _Mapping]] = ...) -> None: ...

class ListLibrariesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLibrariesResponse(_message.Message):
    __slots__ = ("libraries",)
    LIBRARIES_FIELD_NUMBER: _ClassVar[int]
    libraries: _containers.RepeatedCompositeFieldContainer[Library]
    def __init__(self, libraries: _Optional[_Iterable[_Union[Library, _Mapping]]] = ...) -> None: ...

class DeleteLibraryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteLibraryResponse(_message.Message):
    __slots__ = ("deleted_items",)
    DELETED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    deleted_items: int
    def __init__(self, deleted_items: _Optional[int] = ...) -> None: ...

class ReserveItemRequest(_message.Message):
    __slots__ = ("library", "sha256", "name", "source_uri", "user_tags", "idempotency_key")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    USER_TAGS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    library: str
    sha256: str
    name: str
    source_uri: str
    user_tags: _containers.RepeatedScalarFieldContainer[str]
    idempotency_key: str
    def __init__(self, library: _Optional[str] = ..., sha256: _Optional[str] = ..., name: _Optional[str] = ..., source_uri: _Optional[str] = ..., user_tags: _Optional[_Iterable[str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ReserveItemResponse(_message.Message):
    __slots__ = ("item", "created")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    item: Item
    created: bool
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class MarkItemReadyRequest(_message.Message):
    __slots__ = ("id", "auto_tags", "duration_seconds", "sample_rate", "channels")
    ID_FIELD_NUMBER: _ClassVar[int]
    AUTO_TAGS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    id: int
    auto_tags: _containers.RepeatedCompositeFieldContainer[Tag]
    duration_seconds: float
    sample_rate: int
    channels: int
    def __init__(self, id: _Optional[int] = ..., auto_tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., duration_seconds: _Optional[float] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class MarkItemReadyResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class MarkItemDeletingRequest(_message.Message):
    __slots__ = ("id", "only_if_pending_before")
    ID_FIELD_NUMBER: _ClassVar[int]
    ONLY_IF_PENDING_BEFORE_FIELD_NUMBER: _ClassVar[int]
    id: int
    only_if_pending_before: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., only_if_pending_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MarkItemDeletingResponse(_message.Message):
    __slots__ = ("item", "marked")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    MARKED_FIELD_NUMBER: _ClassVar[int]
    item: Item
    marked: bool
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., marked: _Optional[bool] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class BatchGetItemsRequest(_message.Message):
    __slots__ = ("ids", "state")
    IDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    state: ItemState
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., state: _Optional[_Union[ItemState, str]] = ...) -> None: ...

class BatchGetItemsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("library", "page_size", "page_token", "tag")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    library: str
    page_size: int
    page_token: str
    tag: str
    def __init__(self, library: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FindItemIdsRequest(_message.Message):
    __slots__ = ("library", "tags")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    library: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, library: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class FindItemIdsResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteItemRequest(_message.Message):
    __slots__ = ("id", "only_if_state")
    ID_FIELD_NUMBER: _ClassVar[int]
    ONLY_IF_STATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    only_if_state: ItemState
    def __init__(self, id: _Optional[int] = ..., only_if_state: _Optional[_Union[ItemState, str]] = ...) -> None: ...

class DeleteItemResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class CatalogStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LibraryCounts(_message.Message):
    __slots__ = ("library", "ready_items", "pending_items", "total_duration_seconds")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    READY_ITEMS_FIELD_NUMBER: _ClassVar[int]
    PENDING_ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    library: str
    ready_items: int
    pending_items: int
    total_duration_seconds: float
    def __init__(self, library: _Optional[str] = ..., ready_items: _Optional[int] = ..., pending_items: _Optional[int] = ..., total_duration_seconds: _Optional[float] = ...) -> None: ...

class CatalogStatsResponse(_message.Message):
    __slots__ = ("libraries",)
    LIBRARIES_FIELD_NUMBER: _ClassVar[int]
    libraries: _containers.RepeatedCompositeFieldContainer[LibraryCounts]
    def __init__(self, libraries: _Optional[_Iterable[_Union[LibraryCounts, _Mapping]]] = ...) -> None: ...

class ListItemStatesRequest(_message.Message):
    __slots__ = ("library",)
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library: str
    def __init__(self, library: _Optional[str] = ...) -> None: ...

class ItemStateEntry(_message.Message):
    __slots__ = ("id", "state", "update_time", "source_uri", "sha256")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    id: int
    state: ItemState
    update_time: _timestamp_pb2.Timestamp
    source_uri: str
    sha256: str
    def __init__(self, id: _Optional[int] = ..., state: _Optional[_Union[ItemState, str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_uri: _Optional[str] = ..., sha256: _Optional[str] = ...) -> None: ...

class ListItemStatesResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ItemStateEntry]
    def __init__(self, items: _Optional[_Iterable[_Union[ItemStateEntry, _Mapping]]] = ...) -> None: ...

class MarkItemPendingRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class MarkItemPendingResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class ModelChange(_message.Message):
    __slots__ = ("model_name", "model_dim", "window_seconds", "hop_seconds")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIM_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_dim: int
    window_seconds: float
    hop_seconds: float
    def __init__(self, model_name: _Optional[str] = ..., model_dim: _Optional[int] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ...) -> None: ...

class StartModelChangeRequest(_message.Message):
    __slots__ = ("name", "change")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    change: ModelChange
    def __init__(self, name: _Optional[str] = ..., change: _Optional[_Union[ModelChange, _Mapping]] = ...) -> None: ...

class StartModelChangeResponse(_message.Message):
    __slots__ = ("resumed", "replaced")
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    resumed: bool
    replaced: ModelChange
    def __init__(self, resumed: _Optional[bool] = ..., replaced: _Optional[_Union[ModelChange, _Mapping]] = ...) -> None: ...

class FinishModelChangeRequest(_message.Message):
    __slots__ = ("name", "model_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_name: str
    def __init__(self, name: _Optional[str] = ..., model_name: _Optional[str] = ...) -> None: ...

class FinishModelChangeResponse(_message.Message):
    __slots__ = ("library",)
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library: Library
    def __init__(self, library: _Optional[_Union[Library, _Mapping]] = ...) -> None: ...

class CancelModelChangeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelModelChangeResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: ModelChange
    def __init__(self, cancelled: _Optional[_Union[ModelChange, _Mapping]] = ...) -> None: ...

class UpdateItemRequest(_message.Message):
    __slots__ = ("id", "name", "add_tags", "remove_tags")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADD_TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TAGS_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    add_tags: _containers.RepeatedScalarFieldContainer[str]
    remove_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., add_tags: _Optional[_Iterable[str]] = ..., remove_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...
