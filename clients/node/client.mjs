#!/usr/bin/env node
// A small Node.js client for the audiosearch gateway, over the stubs that
// `make node-stubs` generates from protos/ (protoc-gen-es message schemas and
// the GatewayService descriptor) and Connect's gRPC transport (HTTP/2,
// plaintext).
//
//   node clients/node/client.mjs --gateway 127.0.0.1:50051 demo \
//     --library demo --insert a.wav --insert b.wav --query q.wav
//
// `demo` creates the library, uploads each --insert file by client streaming,
// searches with --query, deletes the top result, searches again, deletes the
// library, and prints one JSON document on stdout; `search` searches an
// existing library. Any error prints
// {"error": {"code": "<gRPC code name>", "message": "...", "reason": "..."}}
// and exits 1; `reason` (when the server sent one) is what to branch on
// (docs/clients.md).

import { access, constants, open } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { parseArgs } from "node:util";

import { create } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  CreateLibraryRequestSchema,
  DeleteAudioRequestSchema,
  DeleteLibraryRequestSchema,
  GatewayService,
  InsertAudioMetadataSchema,
  InsertAudioRequestSchema,
  SearchAudioRequestSchema,
  SearchParamsSchema,
} from "./gen/audiosearch/gateway/v1/gateway_pb.js";

// Uploads go in chunks well below gRPC's 4 MB message limit.
const CHUNK_BYTES = 64 * 1024;

// gRPC status code names, indexed by code (Connect's Code enum has the same
// numbers but its own spelling).
const GRPC_CODE_NAMES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED",
];

const USAGE = `usage: node client.mjs [--gateway HOST:PORT] [--token T] [--timeout S] COMMAND ...

  demo   --library NAME [--model MODEL] --insert FILE [--insert FILE...] --query FILE [--top-k K] [--min-score X]
         creates the library, inserts the files, searches with the query, deletes the top
         result, searches again, deletes the library
  search --library NAME --query FILE [--top-k K] [--min-score X]
         searches an existing library

  --gateway   gateway address (default $AUDIOSEARCH_GATEWAY or 127.0.0.1:50051)
  --token     bearer token for a gateway with auth on (default $AUDIOSEARCH_TOKEN)
  --timeout   deadline of each call in seconds (default 120)
  --model     embedding model of the new library (default spectral-v1)
  --top-k     results per search, 1..the server's maximum (default 10)
  --min-score results scoring below are dropped; 0 applies the model's
              calibrated threshold (default -1: keep every result)`;

// A usage error, reported like the server's INVALID_ARGUMENT (and followed
// by the usage on stderr).
class UsageError extends ConnectError {
  constructor(message) {
    super(message, Code.InvalidArgument);
  }
}

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        gateway: { type: "string", default: process.env.AUDIOSEARCH_GATEWAY || "127.0.0.1:50051" },
        token: { type: "string", default: process.env.AUDIOSEARCH_TOKEN || "" },
        timeout: { type: "string", default: "120" },
        library: { type: "string" },
        model: { type: "string", default: "spectral-v1" },
        insert: { type: "string", multiple: true, default: [] },
        query: { type: "string" },
        "top-k": { type: "string", default: "10" },
        "min-score": { type: "string", default: "-1" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (err) {
    throw new UsageError(err.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const [command, ...extra] = positionals;
  if (!(command in COMMANDS) || extra.length > 0) {
    throw new UsageError(`expected one command, demo or search; got ${JSON.stringify(positionals)}`);
  }
  if (!values.library) throw new UsageError("--library is required");
  if (!values.query) throw new UsageError("--query is required");
  if (command === "demo" && values.insert.length === 0) throw new UsageError("demo needs at least one --insert FILE");
  const number = (flag, parse) => {
    const value = parse(values[flag]);
    if (!Number.isFinite(value)) throw new UsageError(`--${flag} must be a number, got ${values[flag]}`);
    return value;
  };
  return {
    ...values,
    command,
    timeoutMs: number("timeout", Number.parseFloat) * 1000,
    // An integer, passed on as is: the server says what range it accepts.
    topK: number("top-k", (s) => (/^-?\d+$/.test(s) ? Number.parseInt(s, 10) : Number.NaN)),
    minScore: number("min-score", Number.parseFloat),
  };
}

// A GatewayService client over gRPC (HTTP/2, plaintext), sending the bearer
// token, when there is one, on every call.
function gatewayClient(address, token) {
  const interceptors = [];
  if (token) {
    interceptors.push((next) => async (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const transport = createGrpcTransport({ baseUrl: `http://${address}`, interceptors });
  return createClient(GatewayService, transport);
}

// The chunks of a file, read as they are sent (never the whole file at once).
async function* fileChunks(path) {
  const file = await open(path, "r");
  try {
    for (;;) {
      const buffer = new Uint8Array(CHUNK_BYTES);
      const { bytesRead } = await file.read(buffer, 0, CHUNK_BYTES, null);
      if (bytesRead === 0) return;
      yield buffer.subarray(0, bytesRead);
    }
  } finally {
    await file.close();
  }
}

// InsertAudio's client stream: the metadata first, then the file's chunks.
async function* insertRequests(library, path) {
  const metadata = create(InsertAudioMetadataSchema, {
    library,
    name: basename(path),
    sourceUri: resolve(path),
  });
  yield create(InsertAudioRequestSchema, { metadata });
  for await (const chunk of fileChunks(path)) {
    yield create(InsertAudioRequestSchema, { chunk });
  }
}

// SearchAudio's client stream: the parameters, then the query's chunks.
async function* searchRequests(params, path) {
  yield create(SearchAudioRequestSchema, { params: create(SearchParamsSchema, params) });
  for await (const chunk of fileChunks(path)) {
    yield create(SearchAudioRequestSchema, { chunk });
  }
}

// Plain JSON views of the messages, with the proto field names: int64 ids as
// numbers (strings past 2^53), timestamps as ISO strings, float32 values
// rounded (scores to 4 digits, seconds to milliseconds).
const id = (value) => (value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString());
const round = (value, digits = 4) => Number(value.toFixed(digits));
const time = (ts) => (ts ? timestampDate(ts).toISOString() : null);
const range = (r) => (r ? { start_seconds: round(r.startSeconds, 3), end_seconds: round(r.endSeconds, 3) } : null);

function libraryJson(library) {
  return {
    name: library.name,
    model: library.model,
    dim: library.dim,
    description: library.description,
    window_seconds: round(library.windowSeconds, 3),
    hop_seconds: round(library.hopSeconds, 3),
    create_time: time(library.createTime),
  };
}

function itemJson(item) {
  return {
    id: id(item.id),
    library: item.library,
    name: item.name,
    source_uri: item.sourceUri,
    sha256: item.sha256,
    duration_seconds: round(item.durationSeconds, 3),
    sample_rate: item.sampleRate,
    channels: item.channels,
    user_tags: item.userTags,
    auto_tags: item.autoTags.map((t) => ({ label: t.label, score: round(t.score) })),
    create_time: time(item.createTime),
  };
}

function searchJson(response) {
  return {
    model: response.model,
    min_evidence: round(response.minEvidence),
    results: response.results.map((r) => ({
      id: id(r.item.id),
      name: r.item.name,
      score: round(r.score),
      evidence: round(r.evidence),
      duration_seconds: round(r.item.durationSeconds, 3),
      item_range: range(r.itemRange),
      query_range: range(r.queryRange),
    })),
  };
}

// Fails on an unreadable file before anything is created on the server.
async function checkReadable(paths) {
  for (const path of paths) {
    await access(path, constants.R_OK).catch((err) => {
      throw new UsageError(`cannot read ${path}: ${err.message}`);
    });
  }
}

// One upload search: SearchAudio with the query file.
async function search(client, args, call) {
  const params = { library: args.library, topK: args.topK, minScore: args.minScore };
  return searchJson(await client.searchAudio(searchRequests(params, args.query), call));
}

// `demo`: the whole life of a library, as one JSON document.
async function demo(client, args, call) {
  await checkReadable([...args.insert, args.query]);
  const created = await client.createLibrary(
    create(CreateLibraryRequestSchema, { name: args.library, model: args.model }),
    call,
  );
  const out = { library: libraryJson(created.library), inserted: [] };
  let failed = true;
  try {
    for (const path of args.insert) {
      const response = await client.insertAudio(insertRequests(args.library, path), call);
      out.inserted.push({ ...itemJson(response.item), created: response.created });
    }
    out.search = await search(client, args, call);
    const top = out.search.results[0];
    if (top) {
      await client.deleteAudio(create(DeleteAudioRequestSchema, { id: BigInt(top.id) }), call);
      out.deleted_item = { id: top.id, name: top.name };
      out.search_after_delete = await search(client, args, call);
    }
    failed = false;
  } finally {
    // The library goes in any case; after a failed step the first error is
    // the one reported.
    try {
      const deleted = await client.deleteLibrary(create(DeleteLibraryRequestSchema, { name: args.library }), call);
      out.deleted_library = { name: args.library, deleted_items: id(deleted.deletedItems) };
    } catch (err) {
      if (!failed) throw err;
    }
  }
  return out;
}

// `search`: one search of an existing library.
async function searchOnly(client, args, call) {
  await checkReadable([args.query]);
  return search(client, args, call);
}

const COMMANDS = { demo, search: searchOnly };

// The reason of the google.rpc.ErrorInfo among a status's details
// (grpc-status-details-bin, which Connect parses into err.details), or
// undefined. ErrorInfo's `reason` is field 1, a string: read by hand, so no
// stubs of google/rpc/error_details.proto are needed.
function errorReason(err) {
  for (const detail of err.details) {
    if (detail.type !== "google.rpc.ErrorInfo" || !(detail.value instanceof Uint8Array)) continue;
    try {
      const reader = new BinaryReader(detail.value);
      while (reader.pos < reader.len) {
        const [field, wireType] = reader.tag();
        if (field === 1 && wireType === WireType.LengthDelimited) return reader.string();
        reader.skip(wireType, field);
      }
    } catch {
      // A malformed detail: no reason.
    }
  }
  return undefined;
}

function errorJson(err) {
  if (err instanceof ConnectError) {
    const error = { code: GRPC_CODE_NAMES[err.code] ?? "UNKNOWN", message: err.rawMessage };
    const reason = errorReason(err);
    return reason ? { ...error, reason } : error;
  }
  return { code: "UNKNOWN", message: err?.message ?? String(err) };
}

async function main() {
  try {
    const args = parseCommandLine(process.argv.slice(2));
    const call = { timeoutMs: args.timeoutMs };
    const out = await COMMANDS[args.command](gatewayClient(args.gateway, args.token), args, call);
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } catch (err) {
    // The JSON document for scripts on stdout, a line for people on stderr.
    const error = errorJson(err);
    process.stdout.write(`${JSON.stringify({ error })}\n`);
    process.stderr.write(`error: ${error.code}: ${error.message}\n${err instanceof UsageError ? `${USAGE}\n` : ""}`);
    process.exitCode = 1;
  }
}

await main();
