"""The FastAPI app: OpenAI's /v1/models, /v1/chat/completions and /v1/completions over the registry and engine."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from lmtune.data.chat import check_tool_template
from lmtune.data.long_text import special_affixes
from lmtune.errors import LmtuneError
from lmtune.serve.classify import MAX_INPUTS, ClassifyRequest, classify
from lmtune.serve.embed import MAX_INPUTS as EMBED_MAX_INPUTS
from lmtune.serve.embed import EmbeddingRequest, embed, embedding_data
from lmtune.serve.engine import Engine, Job, QueueFull
from lmtune.serve.protocol import ApiError, ChatRequest, CompletionRequest
from lmtune.serve.registry import Registry, Served
from lmtune.serve.tools import Holdback, ToolReader, stream_delta, tool_reader


@dataclass(frozen=True)
class Limits:
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_tokens: int = 1024  # the most a request may ask for
    default_max_tokens: int = 128


def create_app(registry: Registry, engine: Engine, limits: Limits) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="lmtune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse(ApiError(e.status_code, str(e.detail)).body(), status_code=e.status_code)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorize(request, limits)
        return {"object": "list", "data": [_model_card(s) for s in registry.models.values()]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        _authorize(request, limits)
        req = _parse(ChatRequest, await _body(request, limits))
        served = _generator(registry, req.model)
        tok = served.backend.tokenizer
        if not served.backend.chat:
            raise ApiError(400, f"model {req.model} has no chat template", param="model", code="no_chat_template")
        prompt = chat_prompt(tok, req)
        ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
        tools = tool_reader(tok, prompt, req.tools)
        return await _answer(engine, served, req, [ids], limits, chat=True, tools=tools)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        _authorize(request, limits)
        req = _parse(CompletionRequest, await _body(request, limits))
        served = _generator(registry, req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise ApiError(400, "prompt is empty", param="prompt")
        return await _answer(engine, served, req, [_raw_ids(served, p) for p in prompts], limits, chat=False)

    _add_head_routes(app, registry, limits)
    return app


def _add_head_routes(app: FastAPI, registry: Registry, limits: Limits) -> None:
    """The routes that read a model's outputs in one forward pass (no generation, no queue)."""

    @app.post("/v1/classify")
    async def classify_route(request: Request) -> dict[str, Any]:
        _authorize(request, limits)
        req = _parse(ClassifyRequest, await _body(request, limits))
        served = _served(registry, req.model)
        if served.backend.kind == "causal":
            raise ApiError(400, f"model {req.model} generates text; /v1/classify is for classifier runs", param="model")
        texts = req.texts()
        if len(texts) > MAX_INPUTS:
            raise ApiError(400, f"at most {MAX_INPUTS} inputs per request", param="input")
        data = await asyncio.to_thread(classify, served.backend, texts)
        return {"object": "list", "model": req.model, "data": data}

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        _authorize(request, limits)
        req = _parse(EmbeddingRequest, await _body(request, limits))
        served = _served(registry, req.model)
        texts = req.texts()
        if len(texts) > EMBED_MAX_INPUTS:
            raise ApiError(400, f"at most {EMBED_MAX_INPUTS} inputs per request", param="input")
        vectors, tokens = await asyncio.to_thread(embed, served, texts)
        data = embedding_data(vectors, req.encoding_format)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": req.model, "usage": usage}


def chat_prompt(tok: Any, req: ChatRequest) -> str:
    """The request's conversation through the model's chat template, its `tools` passed on (tools=); a template
    that cannot render tools is a 400 naming it, not a prompt silently missing them."""
    messages = [m.for_template(i) for i, m in enumerate(req.messages)]
    if req.tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        try:
            check_tool_template(tok)
        except LmtuneError as e:
            raise ApiError(400, e.message, param="tools", code="template_cannot_render_tools") from None
    return tok.apply_chat_template(messages, tools=req.tools or None, tokenize=False, add_generation_prompt=True)


def _authorize(request: Request, limits: Limits) -> None:
    if limits.api_key is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    # Constant-time: the comparison takes as long whatever prefix of the key a guess gets right.
    if not hmac.compare_digest(given.encode(), limits.api_key.encode()):
        raise ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY)", code="invalid_api_key")


async def _body(request: Request, limits: Limits) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise ApiError(413, f"request body over {limits.max_body_bytes} bytes")
    return body


def _parse(schema: Any, body: bytes) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(422, f"{param}: {first['msg']}", param=param, code="invalid_value") from None


def _served(registry: Registry, name: str) -> Served:
    served = registry.get(name)
    if served is None:
        known = ", ".join(registry.models)
        raise ApiError(
            404, f"the model {name!r} does not exist (served: {known})", param="model", code="model_not_found"
        )
    return served


def _generator(registry: Registry, name: str) -> Served:
    served = _served(registry, name)
    if served.backend.kind != "causal":
        raise ApiError(
            400, f"model {name} is a classifier: ask POST /v1/classify", param="model", code="not_a_generator"
        )
    return served


def _raw_ids(served: Served, prompt: str) -> list[int]:
    tok = served.backend.tokenizer
    prefix, _ = special_affixes(tok)  # BOS as in training, never a trailing EOS
    ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
    ids = ids if ids[: len(prefix)] == prefix else [*prefix, *ids]
    return ids or [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]


def _model_card(served: Served) -> dict[str, Any]:
    return {"id": served.name, "object": "model", "created": 0, "owned_by": "lmtune"}


def _budget(req: Any, prompt_ids: list[list[int]], served: Served, limits: Limits) -> int:
    asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
    max_tokens = asked or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens {max_tokens} is over this server's cap of {limits.max_tokens}",
                       param="max_tokens")  # fmt: skip
    context = served.backend.context
    longest = max(len(ids) for ids in prompt_ids)
    if context is not None and longest + max_tokens > context:
        raise ApiError(
            400,
            f"this model's context is {context} tokens; the prompt has {longest} and max_tokens asks for "
            f"{max_tokens}: shorten the prompt or lower max_tokens",
            param="messages" if hasattr(req, "messages") else "prompt",
            code="context_length_exceeded",
        )
    return max_tokens


async def _answer(
    engine: Engine,
    served: Served,
    req: Any,
    prompt_ids: list[list[int]],
    limits: Limits,
    *,
    chat: bool,
    tools: ToolReader | None = None,
) -> Any:
    max_tokens = _budget(req, prompt_ids, served, limits)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
    jobs = []
    for p, ids in enumerate(prompt_ids):
        for i in range(req.n):
            index = p * req.n + i

            def emit(kind: str, payload: Any, index: int = index) -> None:
                loop.call_soon_threadsafe(events.put_nowait, (index, kind, payload))

            jobs.append(Job(served, ids, max_tokens, req.temperature, req.top_p, req.seed, req.stops(), emit))
    try:
        engine.submit(jobs)
    except QueueFull:
        raise ApiError(503, "the server is busy: its request queue is full; retry shortly", code="queue_full") from None
    meta = _Meta(req.model, chat, sum(len(ids) for ids in prompt_ids), jobs, tools)
    if req.stream:
        stream = _stream(events, meta, req.include_usage())
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await _collect(events, meta)


@dataclass
class _Meta:
    model: str
    chat: bool
    prompt_tokens: int
    jobs: list[Job]
    tools: ToolReader | None = None  # reads tool calls out of a chat reply, when the request offers tools
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def usage(self) -> dict[str, int]:
        done = sum(len(j.generated) for j in self.jobs)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }

    def envelope(self, choices: list[dict[str, Any]], stream: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if stream and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def choice(self, index: int, text: str, finish: str | None, stream: bool, first: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
        if stream:
            delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        message = self.tools.parse(text) if self.tools else None
        if message is not None:
            finish = "tool_calls" if finish == "stop" else finish
        else:
            message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}

    def tool_chunks(self, index: int, held: Holdback, finish: str) -> list[dict[str, Any]]:
        """The end of a streamed reply that may call tools: its calls as one delta, or the text it held back."""
        message = self.tools.parse(held.text) if self.tools else None
        if message is None:
            rest = held.text[held.sent :]
            return [self.choice(index, rest, None, stream=True), self.choice(index, "", finish, stream=True)]
        delta = stream_delta(message, content=not held.text[: held.sent].strip())
        data = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        return [data, self.choice(index, "", "tool_calls" if finish == "stop" else finish, stream=True)]


async def _collect(events: asyncio.Queue, meta: _Meta) -> dict[str, Any]:
    texts = [""] * len(meta.jobs)
    finish: list[str | None] = [None] * len(meta.jobs)
    while any(f is None for f in finish):
        index, kind, payload = await events.get()
        if kind == "text":
            texts[index] += payload
        elif kind == "done":
            finish[index] = payload
        else:
            raise ApiError(500, payload)
    choices = [meta.choice(i, texts[i], finish[i], stream=False) for i in range(len(texts))]
    return {**meta.envelope(choices, stream=False), "usage": meta.usage()}


async def _stream(events: asyncio.Queue, meta: _Meta, include_usage: bool) -> AsyncIterator[str]:
    open_ = set(range(len(meta.jobs)))
    started: set[int] = set()
    if meta.chat:  # the role first, as OpenAI's streams start
        for i in sorted(open_):
            yield _sse(meta.envelope([meta.choice(i, "", None, stream=True, first=True)], stream=True))
            started.add(i)
    held = [meta.tools.holdback() for _ in meta.jobs] if meta.tools else []
    while open_:
        index, kind, payload = await events.get()
        if kind == "text" and held:
            payload = held[index].feed(payload)  # the text before a possible tool call
            if not payload:
                continue
        if kind == "text":
            choices = [meta.choice(index, payload, None, stream=True)]
        elif kind == "done":
            open_.discard(index)
            finish = [meta.choice(index, "", payload, stream=True)]
            choices = meta.tool_chunks(index, held[index], payload) if held else finish
        else:
            yield _sse({"error": ApiError(500, payload).body()["error"]})
            break
        for choice in choices:
            yield _sse(meta.envelope([choice], stream=True))
    if include_usage:
        yield _sse({**meta.envelope([], stream=True), "usage": meta.usage()})
    yield "data: [DONE]\n\n"


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
