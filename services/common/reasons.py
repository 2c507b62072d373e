"""The reasons a client can branch on: the `reason` of the google.rpc.ErrorInfo
every INVALID_ARGUMENT and FAILED_PRECONDITION (and the size limits of
RESOURCE_EXHAUSTED) carries, in the domain `DOMAIN`. Stable: a reason is
never renamed or reused for something else; new ones may be added.
docs/clients.md has the table. Plain strings: domain code stays grpc-free."""

from __future__ import annotations

DOMAIN = "audiosearch.io"

# The request: fields and stream shape
MISSING_FIELD = "MISSING_FIELD"  # a required field is unset (BadRequest names it: library, name, model)
INVALID_FIELD = "INVALID_FIELD"  # a field's value is out of its range or malformed (BadRequest names it)
TOP_K_OUT_OF_RANGE = "TOP_K_OUT_OF_RANGE"  # top_k is negative or above the gateway's maximum (0: the default)
CONFLICTING_FIELDS = "CONFLICTING_FIELDS"  # exclusive fields both set (an upload and item_id, a tag added and removed)
BAD_STREAM = "BAD_STREAM"  # a client stream's first message lacks its header, or a later one repeats it
BAD_NAME = "BAD_NAME"  # a library or item name breaks the naming rules
BAD_TAG = "BAD_TAG"  # a tag is empty, too long or holds forbidden characters
BAD_TEXT = "BAD_TEXT"  # stored text holds control, format or separator characters
BAD_PAGE_TOKEN = "BAD_PAGE_TOKEN"  # noqa: S105 - page_token is not one a previous response gave
BAD_PATH = "BAD_PATH"  # a server path is relative, holds NUL or cannot be resolved
ITEM_IN_OTHER_LIBRARY = "ITEM_IN_OTHER_LIBRARY"  # item_id names an item of another library than `library`
SEGMENT_OUT_OF_RANGE = "SEGMENT_OUT_OF_RANGE"  # start/end of an audio segment are outside the item or too far apart

# The audio
EMPTY_UPLOAD = "EMPTY_UPLOAD"  # no bytes were uploaded
NOT_AUDIO = "NOT_AUDIO"  # the bytes cannot be decoded as WAV, FLAC, OGG or MP3
CORRUPT_AUDIO = "CORRUPT_AUDIO"  # it decodes, but holds no samples, NaN/infinite or absurdly loud samples
UNSUPPORTED_AUDIO_FORMAT = "UNSUPPORTED_AUDIO_FORMAT"  # sample rate or channel count outside the supported range
AUDIO_TOO_SHORT = "AUDIO_TOO_SHORT"  # shorter than AUDIOSEARCH_MIN_AUDIO_SECONDS
AUDIO_TOO_LONG = "AUDIO_TOO_LONG"  # longer than AUDIOSEARCH_MAX_AUDIO_SECONDS (RESOURCE_EXHAUSTED)
UPLOAD_TOO_LARGE = "UPLOAD_TOO_LARGE"  # more bytes than AUDIOSEARCH_MAX_UPLOAD_BYTES (RESOURCE_EXHAUSTED)
TOO_MANY_SAMPLES = "TOO_MANY_SAMPLES"  # more samples than AUDIOSEARCH_MAX_DECODED_SAMPLES (RESOURCE_EXHAUSTED)

# Models and libraries
UNKNOWN_MODEL = "UNKNOWN_MODEL"  # no model of that name (ListModels / audiosearch stats lists them)
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"  # the model exists but cannot run here (no weights, no GPU)
LIBRARY_MODEL_MISMATCH = "LIBRARY_MODEL_MISMATCH"  # vectors of one model sent to a library bound to another
MODEL_NOT_SUPPORTED = "MODEL_NOT_SUPPORTED"  # the library's model cannot do this (monitoring needs a landmark model)
REINDEX_REFUSED = "REINDEX_REFUSED"  # a reindex cannot go on (same model, failed items, interrupted): see the message
ITEM_BEING_DELETED = "ITEM_BEING_DELETED"  # the item is being deleted
PLAYBACK_DISABLED = "PLAYBACK_DISABLED"  # the gateway keeps no audio (AUDIOSEARCH_KEEP_AUDIO=false)

# An INVALID_ARGUMENT or FAILED_PRECONDITION raised without a reason of its
# own carries the code's name as its reason ("INVALID_ARGUMENT"): nothing
# more specific to branch on than the code.
