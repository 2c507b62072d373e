"""The checks every store applies the same way: which collection serves a
request, what dimensions and keys are accepted, and how vectors are
checked against the collection's model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from services.common import reasons
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.text import quoted
from services.common.vectors import Sparse, Vector
from services.search.contract import Binding, WindowVector
from services.search.naming import WINDOW_BITS, collection_name, split_key, staging_name

# Milvus refuses an all-zero sparse vector (a silent window): it gets this
# negligible weight on the last index instead, which matches nothing.
EMPTY_WEIGHT = 1e-6


def fits(binding: Binding | None, model: str, dim: int | None) -> bool:
    return binding is not None and binding.model == model and (dim is None or binding.dim == dim)


def resolve(
    library: str, binding_of: Callable[[str], Binding | None], model: str | None = None, dim: int | None = None
) -> tuple[str, Binding]:
    """The collection that serves `library` (for `model`, when given) and its
    binding. A library switched to `model` whose staging collection is not
    adopted yet is served from that staging collection (naming)."""
    name = collection_name(library)
    binding = binding_of(name)
    if model is not None and not fits(binding, model, dim) and not split_key(library)[1]:
        staged = staging_name(library, model)
        staged_binding = binding_of(staged)
        if staged_binding is not None and fits(staged_binding, model, dim):
            return staged, staged_binding
    if binding is None:
        raise NotFound(f"library {quoted(library)} has no vector collection")
    if model is not None and not fits(binding, model, dim):
        raise FailedPrecondition(
            f"library {quoted(library)} holds {binding.model} vectors ({binding.dim}-d); "
            f"{model} ({dim}-d) vectors cannot be mixed in. Use a library created for {model}.",
            reason=reasons.LIBRARY_MODEL_MISMATCH,
        )
    return name, binding


def creation(library: str, model: str, dim: int, sparse: bool) -> tuple[str, str]:
    """(library, staging model) of a collection about to be created, once
    its dimension and key are found acceptable."""
    if dim <= 0 or (dim > 32768 and not sparse) or dim > 1 << 32:
        raise InvalidArgument(f"dimension {dim} is out of range")
    base, staged_model = split_key(library)
    if staged_model and staged_model != model:
        raise InvalidArgument(f"the staging collection {quoted(library)} is for {staged_model}, not {model}")
    return base, staged_model


def already_bound(library: str, binding: Binding) -> FailedPrecondition:
    return FailedPrecondition(
        f"library {quoted(library)} is already bound to {binding.model} ({binding.dim}-d)",
        reason=reasons.LIBRARY_MODEL_MISMATCH,
    )


def check_key(v: WindowVector) -> None:
    if not 0 <= v.window < (1 << WINDOW_BITS) or v.item_id <= 0:
        raise InvalidArgument(f"item id {v.item_id} / window {v.window} out of range")


def dense(vector: Vector, binding: Binding, what: str) -> np.ndarray:
    """A dense vector checked against the collection, as float32."""
    if isinstance(vector, Sparse) or len(vector) != binding.dim:
        raise InvalidArgument(f"{what}: expected a dense {binding.dim}-d vector")
    return np.asarray(vector, dtype=np.float32)


def sparse(vector: Vector, binding: Binding, what: str) -> Sparse:
    """A sparse vector checked against the collection, indices ascending and
    distinct; an empty one gets EMPTY_WEIGHT on the last index."""
    if not isinstance(vector, Sparse):
        raise InvalidArgument(f"{what}: this library holds sparse vectors ({binding.model})")
    if len(vector.indices) and int(vector.indices.max()) >= binding.dim:
        raise InvalidArgument(f"{what}: sparse index out of range 0..{binding.dim - 1}")
    if not len(vector.indices):
        return Sparse(np.array([binding.dim - 1], dtype=np.uint32), np.array([EMPTY_WEIGHT], dtype=np.float32))
    if np.any(np.diff(vector.indices.astype(np.int64)) <= 0):  # a client's unsorted or repeated indices
        return Sparse.from_dict(vector.as_dict())
    return vector


def checked(vector: Vector, binding: Binding, what: str) -> Vector:
    """A vector checked against the collection's kind and dimension."""
    return sparse(vector, binding, what) if binding.sparse else dense(vector, binding, what)
