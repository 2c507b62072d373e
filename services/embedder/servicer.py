"""gRPC surface of the embedder: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

from audiosearch.embedder.v1 import embedder_pb2 as pb
from audiosearch.embedder.v1 import embedder_pb2_grpc as pb_grpc

from services.common import uploads
from services.common.convert import vector_fields
from services.embedder.embedding import Embedder
from services.embedder.models.base import ModelInfo

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EmbedderService"].full_name


def model_pb(
    info: ModelInfo, available: bool, reason: str, loading: bool = False, window: float = 0.0, hop: float = 0.0
) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name,
        version=info.version,
        dim=info.dim,
        sample_rate=info.sample_rate,
        window_seconds=window or info.window_seconds,
        hop_seconds=hop or info.hop_seconds,
        min_evidence=info.min_evidence,
        available=available,
        unavailable_reason=reason,
        produces_tags=info.produces_tags,
        loading=loading,
        sparse=info.sparse,
        landmarks=info.landmarks,
        min_confidence=info.min_confidence,
        purpose=info.purpose,
        score_meaning=info.score_meaning,
    )


class EmbedderServicer(pb_grpc.EmbedderServiceServicer):
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    async def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        models = [model_pb(s.info, s.available, s.reason, s.loading) for s in self.embedder.models()]
        return pb.ListModelsResponse(models=models, default_model=self.embedder.registry.default_name)

    async def Embed(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async with self.embedder.admission.turn():  # before the upload is read: it counts towards memory
            options, data = await uploads.collect(request_iterator, "options", self.embedder.config.max_upload_bytes)
            result = await self.embedder.embed(
                data,
                options.model,
                options.top_tags,
                options.window_seconds,
                options.hop_seconds,
                options.query,
                options.single_framing,
            )
        return pb.EmbedResponse(
            model=model_pb(result.model, True, "", window=result.window, hop=result.hop),
            audio=pb.AudioInfo(
                duration_seconds=result.duration,
                sample_rate=result.sample_rate,
                channels=result.channels,
                sha256=result.sha256,
            ),
            windows=[
                pb.Window(
                    index=w.index,
                    offset_seconds=w.offset,
                    duration_seconds=w.duration,
                    speed=w.speed,
                    pitch=w.pitch,
                    decide_only=w.decide_only,
                    **vector_fields(w.vector, pb.SparseVector),
                )
                for w in result.windows
            ],
            tags=[pb.Tag(label=label, score=score) for label, score in result.tags],
        )
