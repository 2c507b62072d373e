from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelBinding(_message.Message):
    __slots__ = ("name", "dim", "sparse")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    sparse: bool
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., sparse: _Optional[bool] = ...) -> None: ...

class SparseVector(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, indices: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("library", "model")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    library: str
    model: ModelBinding
    def __init__(self, library: _Optional[str] = ..., model: _Optional[_Union[ModelBinding, _Mapping]] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("library",)
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library: str
    def __init__(self, library: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class WindowVector(_message.Message):
    __slots__ = ("item_id", "window_index", "offset_seconds", "vector", "sparse")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    window_index: int
    offset_seconds: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    sparse: SparseVector
    def __init__(self, item_id: _Optional[int] = ..., window_index: _Optional[int] = ..., offset_seconds: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ..., sparse: _Optional[_Union[SparseVector, _Mapping]] = ...) -> None: ...

class UpsertVectorsRequest(_message.Message):
    __slots__ = ("library", "model", "vectors")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    library: str
    model: ModelBinding
    vectors: _containers.RepeatedCompositeFieldContainer[WindowVector]
    def __init__(self, library: _Optional[str] = ..., model: _Optional[_Union[ModelBinding, _Mapping]] = ..., vectors: _Optional[_Iterable[_Union[WindowVector, _Mapping]]] = ...) -> None: ...

class UpsertVectorsResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class GetVectorsRequest(_message.Message):
    __slots__ = ("library", "item_id", "windows")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    library: str
    item_id: int
    windows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, library: _Optional[str] = ..., item_id: _Optional[int] = ..., windows: _Optional[_Iterable[int]] = ...) -> None: ...

class GetVectorsResponse(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[WindowVector]
    def __init__(self, vectors: _Optional[_Iterable[_Union[WindowVector, _Mapping]]] = ...) -> None: ...

class ItemWindows(_message.Message):
    __slots__ = ("item_id", "windows")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    windows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_id: _Optional[int] = ..., windows: _Optional[_Iterable[int]] = ...) -> None: ...

class BatchGetVectorsRequest(_message.Message):
    __slots__ = ("library", "items")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    library: str
    items: _containers.RepeatedCompositeFieldContainer[ItemWindows]
    def __init__(self, library: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ItemWindows, _Mapping]]] = ...) -> None: ...

class BatchGetVectorsResponse(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[WindowVector]
    def __init__(self, vectors: _Optional[_Iterable[_Union[WindowVector, _Mapping]]] = ...) -> None: ...

class QueryVector(_message.Message):
    __slots__ = ("vector", "sparse")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    sparse: SparseVector
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., sparse: _Optional[_Union[SparseVector, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("library", "model", "queries", "top_k", "item_ids", "exclude_item_ids", "hits_per_item")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    HITS_PER_ITEM_FIELD_NUMBER: _ClassVar[int]
    library: str
    model: ModelBinding
    queries: _containers.RepeatedCompositeFieldContainer[QueryVector]
    top_k: int
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[int]
    hits_per_item: int
    def __init__(self, library: _Optional[str] = ..., model: _Optional[_Union[ModelBinding, _Mapping]] = ..., queries: _Optional[_Iterable[_Union[QueryVector, _Mapping]]] = ..., top_k: _Optional[int] = ..., item_ids: _Optional[_Iterable[int]] = ..., exclude_item_ids: _Optional[_Iterable[int]] = ..., hits_per_item: _Optional[int] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("item_id", "window_index", "offset_seconds", "score")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    window_index: int
    offset_seconds: float
    score: float
    def __init__(self, item_id: _Optional[int] = ..., window_index: _Optional[int] = ..., offset_seconds: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class QueryHits(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryHits]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryHits, _Mapping]]] = ...) -> None: ...

class DeleteVectorsRequest(_message.Message):
    __slots__ = ("library", "item_ids")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    library: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, library: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteVectorsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class CollectionStatsRequest(_message.Message):
    __slots__ = ("library",)
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library: str
    def __init__(self, library: _Optional[str] = ...) -> None: ...

class CollectionStats(_message.Message):
    __slots__ = ("library", "model", "vectors", "items")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    library: str
    model: ModelBinding
    vectors: int
    items: int
    def __init__(self, library: _Optional[str] = ..., model: _Optional[_Union[ModelBinding, _Mapping]] = ..., vectors: _Optional[int] = ..., items: _Optional[int] = ...) -> None: ...

class CollectionStatsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionStats]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionStats, _Mapping]]] = ...) -> None: ...

class ListItemIdsRequest(_message.Message):
    __slots__ = ("library",)
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library: str
    def __init__(self, library: _Optional[str] = ...) -> None: ...

class ListItemIdsResponse(_message.Message):
    __slots__ = ("item_ids",)
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ...) -> None: ...
