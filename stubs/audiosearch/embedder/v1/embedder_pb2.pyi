from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "dim", "sample_rate", "window_seconds", "hop_seconds", "available", "unavailable_reason", "produces_tags", "loading", "min_evidence", "sparse", "landmarks", "min_confidence", "purpose", "score_meaning")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    PRODUCES_TAGS_FIELD_NUMBER: _ClassVar[int]
    LOADING_FIELD_NUMBER: _ClassVar[int]
    MIN_EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SCORE_MEANING_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    dim: int
    sample_rate: int
    window_seconds: float
    hop_seconds: float
    available: bool
    unavailable_reason: str
    produces_tags: bool
    loading: bool
    min_evidence: float
    sparse: bool
    landmarks: bool
    min_confidence: float
    purpose: str
    score_meaning: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., dim: _Optional[int] = ..., sample_rate: _Optional[int] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., produces_tags: _Optional[bool] = ..., loading: _Optional[bool] = ..., min_evidence: _Optional[float] = ..., sparse: _Optional[bool] = ..., landmarks: _Optional[bool] = ..., min_confidence: _Optional[float] = ..., purpose: _Optional[str] = ..., score_meaning: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class EmbedOptions(_message.Message):
    __slots__ = ("model", "top_tags", "window_seconds", "hop_seconds", "query", "single_framing")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOP_TAGS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SINGLE_FRAMING_FIELD_NUMBER: _ClassVar[int]
    model: str
    top_tags: int
    window_seconds: float
    hop_seconds: float
    query: bool
    single_framing: bool
    def __init__(self, model: _Optional[str] = ..., top_tags: _Optional[int] = ..., window_seconds: _Optional[float] = ..., hop_seconds: _Optional[float] = ..., query: _Optional[bool] = ..., single_framing: _Optional[bool] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("options", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: EmbedOptions
    chunk: bytes
    def __init__(self, options: _Optional[_Union[EmbedOptions, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class AudioInfo(_message.Message):
    __slots__ = ("duration_seconds", "sample_rate", "channels", "sha256")
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    duration_seconds: float
    sample_rate: int
    channels: int
    sha256: str
    def __init__(self, duration_seconds: _Optional[float] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("index", "offset_seconds", "duration_seconds", "vector", "sparse", "speed", "pitch", "decide_only")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    DECIDE_ONLY_FIELD_NUMBER: _ClassVar[int]
    index: int
    offset_seconds: float
    duration_seconds: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    sparse: SparseVector
    speed: float
    pitch: float
    decide_only: bool
    def __init__(self, index: _Optional[int] = ..., offset_seconds: _Optional[float] = ..., duration_seconds: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ..., sparse: _Optional[_Union[SparseVector, _Mapping]] = ..., speed: _Optional[float] = ..., pitch: _Optional[float] = ..., decide_only: _Optional[bool] = ...) -> None: ...

class SparseVector(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model", "audio", "windows", "tags")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    audio: AudioInfo
    windows: _containers.RepeatedCompositeFieldContainer[Window]
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., audio: _Optional[_Union[AudioInfo, _Mapping]] = ..., windows: _Optional[_Iterable[_Union[Window, _Mapping]]] = ..., tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ...) -> None: ...
