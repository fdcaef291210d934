"""ENHANCER=openai|gemini through the real SDKs against a local server; failures fall back."""

from __future__ import annotations

from pathlib import Path

from fake_provider import Reply
from harness import GEMINI_KEY, OPENAI_KEY, served
from provider_wire import gemini_error, gemini_text, openai_chat, openai_error

from genrpc.imagegen.v1 import generation_pb2 as g
from server.engine.enhancers.template import enhance_prompt

SUCCESS = g.GENERATION_STATUS_SUCCESS
REWRITE = "A photorealistic red fox curled up in fresh snow, golden-hour light, 85mm lens"


async def test_the_openai_enhancer_writes_the_prompt(tmp_path: Path) -> None:
    async with served(tmp_path, enhancer="openai") as s:
        s.fake.queue(openai_chat(REWRITE))
        done = await s.run(prompt="a red fox in snow", enhancement_template="photorealistic")
    assert done.status == SUCCESS, done.error
    assert done.prompt == REWRITE and done.original_prompt == "a red fox in snow"
    assert done.enhanced_by == "openai/gpt-4.1-mini" and done.enhancement_fallback_reason == ""
    [request] = s.fake.received
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = request.json()
    assert body["model"] == "gpt-4.1-mini"
    system, user = body["messages"]
    assert system["role"] == "system" and "photorealistic style" in system["content"]
    assert user == {"role": "user", "content": "a red fox in snow"}


async def test_an_openai_enhancer_failure_falls_back_to_the_template(tmp_path: Path) -> None:
    async with served(tmp_path, enhancer="openai", enhancer_model="gpt-4o-mini") as s:
        s.fake.queue(openai_error(503, "The engine is currently overloaded.", None, "server_error"))
        done = await s.run(prompt="a red fox in snow", enhancement_template="comic")
    assert done.status == SUCCESS, done.error
    assert done.prompt == enhance_prompt("a red fox in snow", "comic")
    assert done.enhanced_by == "template"
    assert "openai/gpt-4o-mini" in done.enhancement_fallback_reason
    assert "503" in done.enhancement_fallback_reason
    assert s.fake.received[0].json()["model"] == "gpt-4o-mini"


async def test_the_gemini_enhancer_writes_the_prompt(tmp_path: Path) -> None:
    async with served(tmp_path, enhancer="gemini") as s:
        s.fake.queue(gemini_text(REWRITE))
        done = await s.run(prompt="a red fox in snow", enhancement_template="sticker")
    assert done.status == SUCCESS, done.error
    assert done.prompt == REWRITE and done.enhanced_by == "gemini/gemini-2.5-flash"
    [request] = s.fake.received
    assert request.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == GEMINI_KEY
    body = request.json()
    instruction = body.get("systemInstruction") or body.get("system_instruction")
    assert "sticker style" in str(instruction)
    assert body["contents"][0]["parts"][0]["text"] == "a red fox in snow"


async def test_gemini_enhancer_errors_and_hangs_fall_back(tmp_path: Path) -> None:
    async with served(tmp_path, enhancer="gemini", provider_timeout_seconds=1.0) as s:
        s.fake.queue(
            gemini_error(429, "Resource has been exhausted.", "RESOURCE_EXHAUSTED"),
            Reply(200, b"<html>not json"),
            Reply(hang=True),
            gemini_text(""),
        )
        outcomes = [await s.run(prompt=f"a red fox, take {i}") for i in range(4)]
    for done in outcomes:
        assert done.status == SUCCESS, done.error
        assert done.enhanced_by == "template"
        assert done.enhancement_fallback_reason.startswith("gemini/gemini-2.5-flash")
        assert done.prompt == enhance_prompt(done.original_prompt, "general")
    reasons = [d.enhancement_fallback_reason for d in outcomes]
    assert "429" in reasons[0]
    assert "within 1 s" in reasons[2]
    assert "no text" in reasons[3]


async def test_an_openai_enhancer_that_hangs_falls_back_in_time(tmp_path: Path) -> None:
    async with served(tmp_path, enhancer="openai", provider_timeout_seconds=1.0) as s:
        s.fake.queue(Reply(hang=True))
        done = await s.run(prompt="a red fox in snow")
    assert done.status == SUCCESS, done.error
    assert done.enhanced_by == "template"
    assert "did not answer within 1 s" in done.enhancement_fallback_reason
