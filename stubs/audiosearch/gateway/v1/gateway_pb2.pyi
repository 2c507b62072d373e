import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RepairKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPAIR_KIND_UNSPECIFIED: _ClassVar[RepairKind]
    REPAIR_KIND_ORPHAN_VECTORS: _ClassVar[RepairKind]
    REPAIR_KIND_UNFINISHED_DELETE: _ClassVar[RepairKind]
    REPAIR_KIND_STALE_PENDING: _ClassVar[RepairKind]
    REPAIR_KIND_REINDEXED: _ClassVar[RepairKind]
    REPAIR_KIND_MISSING_VECTORS: _ClassVar[RepairKind]
    REPAIR_KIND_MISSING_COLLECTION: _ClassVar[RepairKind]
    REPAIR_KIND_ORPHAN_COLLECTION: _ClassVar[RepairKind]

class ReindexOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REINDEX_OUTCOME_UNSPECIFIED: _ClassVar[ReindexOutcome]
    REINDEX_OUTCOME_SWITCHED: _ClassVar[ReindexOutcome]
    REINDEX_OUTCOME_UNCHANGED: _ClassVar[ReindexOutcome]
    REINDEX_OUTCOME_CANCELLED: _ClassVar[ReindexOutcome]

class SampleType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_TYPE_UNSPECIFIED: _ClassVar[SampleType]
    SAMPLE_TYPE_S16LE: _ClassVar[SampleType]
    SAMPLE_TYPE_F32LE: _ClassVar[SampleType]

class MonitorEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MONITOR_EVENT_KIND_UNSPECIFIED: _ClassVar[MonitorEventKind]
    MONITOR_EVENT_KIND_STARTED: _ClassVar[MonitorEventKind]
    MONITOR_EVENT_KIND_ENDED: _ClassVar[MonitorEventKind]
    MONITOR_EVENT_KIND_SUMMARY: _ClassVar[MonitorEventKind]
REPAIR_KIND_UNSPECIFIED: RepairKind
REPAIR_KIND_ORPHAN_VECTORS: RepairKind
REPAIR_KIND_UNFINISHED_DELETE: RepairKind
REPAIR_KIND_STALE_PENDING: RepairKind
REPAIR_KIND_REINDEXED: RepairKind
REPAIR_KIND_MISSING_VECTORS: RepairKind
REPAIR_KIND_MISSING_COLLECTION: RepairKind
REPAIR_KIND_ORPHAN_COLLECTION: RepairKind
REINDEX_OUTCOME_UNSPECIFIED: ReindexOutcome
REINDEX_OUTCOME_SWITCHED: ReindexOutcome
REINDEX_OUTCOME_UNCHANGED: ReindexOutcome
REINDEX_OUTCOME_CANCELLED: ReindexOutcome
SAMPLE_TYPE_UNSPECIFIED: SampleType
SAMPLE_TYPE_S16LE: SampleType
SAMPLE_TYPE_F32LE: SampleType
MONITOR_EVENT_KIND_UNSPECIFIED: MonitorEventKind
MONITOR_EVENT_KIND_STARTED: MonitorEventKind
MONITOR_EVENT_KIND_ENDED: MonitorEventKind
MONITOR_EVENT_KIND_SUMMARY: MonitorEventKind

class Library(_message.Message):
    __slots__ = ("name", "model", "dim", "description", "create_time", "window_seconds", "hop_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    dim: int
    description: str
    create_time: _timestamp_pb2.Timestamp
    window_seconds: float
    hop_seconds: float
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., dim: _Optional[int] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class AudioItem(_message.Message):
    __slots__ = ("id", "library", "name", "source_uri", "sha256", "duration_seconds", "sample_rate", "channels", "user_tags", "auto_tags", "create_time")
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
    def __init__(self, id: _Optional[int] = ..., library: _Optional[str] = ..., name: _Optional[str] = ..., source_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., duration_seconds: _Optional[float] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., user_tags: _Optional[_Iterable[str]] = ..., auto_tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateLibraryRequest(_message.Message):
    __slots__ = ("name", "model", "description", "window_seconds", "hop_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    description: str
    window_seconds: float
    hop_seconds: float
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., description: _Optional[str] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ...) -> None: ...

class CreateLibraryResponse(_message.Message):
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

class InsertAudioMetadata(_message.Message):
    __slots__ = ("library", "name", "source_uri", "tags", "idempotency_key")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    library: str
    name: str
    source_uri: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    idempotency_key: str
    def __init__(self, library: _Optional[str] = ..., name: _Optional[str] = ..., source_uri: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class InsertAudioRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: InsertAudioMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[InsertAudioMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class InsertAudioResponse(_message.Message):
    __slots__ = ("item", "created")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    item: AudioItem
    created: bool
    def __init__(self, item: _Optional[_Union[AudioItem, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class InsertAudioFromPathRequest(_message.Message):
    __slots__ = ("library", "path", "name", "tags", "idempotency_key")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    library: str
    path: str
    name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    idempotency_key: str
    def __init__(self, library: _Optional[str] = ..., path: _Optional[str] = ..., name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class InsertAudioFromPathResponse(_message.Message):
    __slots__ = ("item", "created")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    item: AudioItem
    created: bool
    def __init__(self, item: _Optional[_Union[AudioItem, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class SearchParams(_message.Message):
    __slots__ = ("library", "top_k", "item_id", "tags", "min_score")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    library: str
    top_k: int
    item_id: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    min_score: float
    def __init__(self, library: _Optional[str] = ..., top_k: _Optional[int] = ..., item_id: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ..., min_score: _Optional[float] = ...) -> None: ...

class SearchAudioRequest(_message.Message):
    __slots__ = ("params", "chunk")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    params: SearchParams
    chunk: bytes
    def __init__(self, params: _Optional[_Union[SearchParams, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start_seconds", "end_seconds")
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    start_seconds: float
    end_seconds: float
    def __init__(self, start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("item", "score", "item_range", "query_range", "evidence", "speed", "pitch")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ITEM_RANGE_FIELD_NUMBER: _ClassVar[int]
    QUERY_RANGE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    item: AudioItem
    score: float
    item_range: TimeRange
    query_range: TimeRange
    evidence: float
    speed: float
    pitch: float
    def __init__(self, item: _Optional[_Union[AudioItem, _Mapping]] = ..., score: _Optional[float] = ..., item_range: _Optional[_Union[TimeRange, _Mapping]] = ..., query_range: _Optional[_Union[TimeRange, _Mapping]] = ..., evidence: _Optional[float] = ..., speed: _Optional[float] = ..., pitch: _Optional[float] = ...) -> None: ...

class SearchAudioResponse(_message.Message):
    __slots__ = ("results", "model", "min_evidence", "min_score")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MIN_EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    model: str
    min_evidence: float
    min_score: float
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., model: _Optional[str] = ..., min_evidence: _Optional[float] = ..., min_score: _Optional[float] = ...) -> None: ...

class GetAudioRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetAudioResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: AudioItem
    def __init__(self, item: _Optional[_Union[AudioItem, _Mapping]] = ...) -> None: ...

class GetAudioSegmentRequest(_message.Message):
    __slots__ = ("id", "start_seconds", "end_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    start_seconds: float
    end_seconds: float
    def __init__(self, id: _Optional[int] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ...) -> None: ...

class GetAudioSegmentResponse(_message.Message):
    __slots__ = ("chunk", "content_type", "start_seconds", "end_seconds", "total_bytes")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    content_type: str
    start_seconds: float
    end_seconds: float
    total_bytes: int
    def __init__(self, chunk: _Optional[bytes] = ..., content_type: _Optional[str] = ..., start_seconds: _Optional[float] = ..., end_seconds: _Optional[float] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class ListAudioRequest(_message.Message):
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

class ListAudioResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[AudioItem]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[AudioItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteAudioRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class DeleteAudioResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateAudioRequest(_message.Message):
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

class UpdateAudioResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: AudioItem
    def __init__(self, item: _Optional[_Union[AudioItem, _Mapping]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LibraryStats(_message.Message):
    __slots__ = ("name", "model", "items", "pending_items", "total_duration_seconds", "indexed_items", "vectors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PENDING_ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    items: int
    pending_items: int
    total_duration_seconds: float
    indexed_items: int
    vectors: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., items: _Optional[int] = ..., pending_items: _Optional[int] = ..., total_duration_seconds: _Optional[float] = ..., indexed_items: _Optional[int] = ..., vectors: _Optional[int] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "version", "dim", "available", "unavailable_reason", "purpose", "score_meaning")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SCORE_MEANING_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    dim: int
    available: bool
    unavailable_reason: str
    purpose: str
    score_meaning: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., dim: _Optional[int] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., purpose: _Optional[str] = ..., score_meaning: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("libraries", "models", "default_model")
    LIBRARIES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    libraries: _containers.RepeatedCompositeFieldContainer[LibraryStats]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    default_model: str
    def __init__(self, libraries: _Optional[_Iterable[_Union[LibraryStats, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class RepairRequest(_message.Message):
    __slots__ = ("dry_run", "stale_after_seconds")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    STALE_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    stale_after_seconds: float
    def __init__(self, dry_run: _Optional[bool] = ..., stale_after_seconds: _Optional[float] = ...) -> None: ...

class RepairAction(_message.Message):
    __slots__ = ("kind", "library", "item_id", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: RepairKind
    library: str
    item_id: int
    detail: str
    def __init__(self, kind: _Optional[_Union[RepairKind, str]] = ..., library: _Optional[str] = ..., item_id: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class RepairResponse(_message.Message):
    __slots__ = ("actions", "dry_run")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[RepairAction]
    dry_run: bool
    def __init__(self, actions: _Optional[_Iterable[_Union[RepairAction, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ReindexLibraryRequest(_message.Message):
    __slots__ = ("library", "model", "window_seconds", "hop_seconds")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    library: str
    model: str
    window_seconds: float
    hop_seconds: float
    def __init__(self, library: _Optional[str] = ..., model: _Optional[str] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ...) -> None: ...

class ReindexFailure(_message.Message):
    __slots__ = ("item_id", "name", "reason")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    name: str
    reason: str
    def __init__(self, item_id: _Optional[int] = ..., name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReindexLibraryResponse(_message.Message):
    __slots__ = ("total_items", "reindexed_items", "skipped_items", "failed_items", "failure", "elapsed_seconds", "outcome", "library", "previous_model", "detail")
    TOTAL_ITEMS_FIELD_NUMBER: _ClassVar[int]
    REINDEXED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    FAILED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    total_items: int
    reindexed_items: int
    skipped_items: int
    failed_items: int
    failure: ReindexFailure
    elapsed_seconds: float
    outcome: ReindexOutcome
    library: Library
    previous_model: str
    detail: str
    def __init__(self, total_items: _Optional[int] = ..., reindexed_items: _Optional[int] = ..., skipped_items: _Optional[int] = ..., failed_items: _Optional[int] = ..., failure: _Optional[_Union[ReindexFailure, _Mapping]] = ..., elapsed_seconds: _Optional[float] = ..., outcome: _Optional[_Union[ReindexOutcome, str]] = ..., library: _Optional[_Union[Library, _Mapping]] = ..., previous_model: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class MonitorStart(_message.Message):
    __slots__ = ("library", "sample_rate", "channels", "sample_type", "min_score", "live")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    library: str
    sample_rate: int
    channels: int
    sample_type: SampleType
    min_score: float
    live: bool
    def __init__(self, library: _Optional[str] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., sample_type: _Optional[_Union[SampleType, str]] = ..., min_score: _Optional[float] = ..., live: _Optional[bool] = ...) -> None: ...

class MonitorRequest(_message.Message):
    __slots__ = ("start", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: MonitorStart
    chunk: bytes
    def __init__(self, start: _Optional[_Union[MonitorStart, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class MonitorEvent(_message.Message):
    __slots__ = ("kind", "item", "stream_range", "item_range", "played_seconds", "speed", "confidence", "scanned_seconds", "occurrences", "decided_at_seconds")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    STREAM_RANGE_FIELD_NUMBER: _ClassVar[int]
    ITEM_RANGE_FIELD_NUMBER: _ClassVar[int]
    PLAYED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SCANNED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OCCURRENCES_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    kind: MonitorEventKind
    item: AudioItem
    stream_range: TimeRange
    item_range: TimeRange
    played_seconds: float
    speed: float
    confidence: float
    scanned_seconds: float
    occurrences: int
    decided_at_seconds: float
    def __init__(self, kind: _Optional[_Union[MonitorEventKind, str]] = ..., item: _Optional[_Union[AudioItem, _Mapping]] = ..., stream_range: _Optional[_Union[TimeRange, _Mapping]] = ..., item_range: _Optional[_Union[TimeRange, _Mapping]] = ..., played_seconds: _Optional[float] = ..., speed: _Optional[float] = ..., confidence: _Optional[float] = ..., scanned_seconds: _Optional[float] = ..., occurrences: _Optional[int] = ..., decided_at_seconds: _Optional[float] = ...) -> None: ...
