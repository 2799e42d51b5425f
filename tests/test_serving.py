"""`tformer serve`: the OpenAI API over HTTP, checked with the official `openai` client.

Every server here is real -- uvicorn on a free 127.0.0.1 port, started and stopped by the
test (`serving`) -- and every answer is compared with `tformer.generation.generate` run on
the same model in the test process, not with the server's own output.
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import torch

from serving import char_tokenizer, serving, tiny_lm
from tformer.generation import generate
from tformer.serving import ServerSettings, create_app

PROMPTS = ["the", "hello world", "the quick brown fox", "lazy dog", "t", "fox jumps over the"]
PROMPTS += ["hello", "the lazy dog jumps over the quick brown"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return char_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def lm(tokenizer):
    return tiny_lm(tokenizer)


@pytest.fixture(scope="module")
def url(lm, tokenizer):
    app = create_app(lm, tokenizer, ServerSettings(model_name="tiny", max_batch=8))
    with serving(app) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def greedy_text(model, tokenizer, prompt: str | list[int], max_new_tokens: int) -> str:
    """The reference: `generate` alone on the prompt, decoded."""
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
    new = generate(model, torch.tensor([ids]), max_new_tokens=max_new_tokens)[0]
    return tokenizer.decode(new.tolist())


def chat_ids(tokenizer, content: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}])
    return tokenizer.encode(text, add_special_tokens=False)


def test_completion_is_generates_greedy_text_whole_and_streamed(client, lm, tokenizer) -> None:
    expected = greedy_text(lm, tokenizer, "the quick", 12)
    answer = client.completions.create(
        model="tiny", prompt="the quick", max_tokens=12, temperature=0
    )
    assert answer.choices[0].text == expected
    assert answer.choices[0].finish_reason == "length"
    prompt_tokens = len(tokenizer.encode("the quick"))
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (prompt_tokens, 12)
    chunks = client.completions.create(
        model="tiny", prompt="the quick", max_tokens=12, temperature=0, stream=True
    )
    pieces = [(c.choices[0].text, c.choices[0].finish_reason) for c in chunks]
    assert "".join(text for text, _ in pieces) == expected
    assert pieces[-1][1] == "length" and all(f is None for _, f in pieces[:-1])


def test_chat_renders_the_template_and_streams_deltas(client, lm, tokenizer) -> None:
    messages = [{"role": "user", "content": "hello"}]
    expected = greedy_text(lm, tokenizer, chat_ids(tokenizer, "hello"), 10)
    answer = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, temperature=0
    )
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == expected
    assert answer.usage.prompt_tokens == len(chat_ids(tokenizer, "hello"))
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_stop_strings_end_the_answer_before_the_stop_text(client, lm, tokenizer) -> None:
    full = greedy_text(lm, tokenizer, "hello", 30)
    stop = full[5:7]  # two characters from inside the greedy answer
    expected = full[: full.index(stop)]
    for stream in (False, True):
        answer = client.completions.create(
            model="tiny", prompt="hello", max_tokens=30, temperature=0, stop=[stop],
            stream=stream,
        )  # fmt: skip
        if stream:
            chunks = list(answer)
            text = "".join(c.choices[0].text for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            text, finish = answer.choices[0].text, answer.choices[0].finish_reason
        assert (text, finish) == (expected, "stop")


def test_eight_concurrent_greedy_requests_equal_eight_alone(client, lm, tokenizer) -> None:
    """Requests that join and leave the running batch at different steps (different prompt
    lengths and max_tokens) get the tokens each gets alone."""

    def ask(i: int) -> str:
        return (
            client.completions.create(
                model="tiny", prompt=PROMPTS[i], max_tokens=8 + 2 * i, temperature=0
            )
            .choices[0]
            .text
        )

    alone = [ask(i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, range(8)))
    assert together == alone
    assert alone == [greedy_text(lm, tokenizer, PROMPTS[i], 8 + 2 * i) for i in range(8)]


def test_prompts_prefilled_together_or_in_chunks_answer_as_alone(lm, tokenizer) -> None:
    """With an 8-token prefill budget, short prompts arriving together share a pass and
    the long ones are prefilled alone, 8 tokens between decode steps."""
    settings = ServerSettings(model_name="tiny", max_batch=8, prefill_chunk=8)
    with serving(create_app(lm, tokenizer, settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def ask(i: int) -> str:
            answer = client.completions.create(
                model="tiny", prompt=PROMPTS[i], max_tokens=10, temperature=0
            )
            return answer.choices[0].text

        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(ask, range(8)))
    assert together == [greedy_text(lm, tokenizer, PROMPTS[i], 10) for i in range(8)]
    assert max(len(tokenizer.encode(p)) for p in PROMPTS) > 3 * 8  # some need 4 chunks


def test_several_prompts_and_choices_are_numbered_prompt_by_prompt(client, lm, tokenizer):
    answer = client.completions.create(
        model="tiny", prompt=["the", "hello"], max_tokens=6, temperature=0, n=2
    )
    texts = [c.text for c in sorted(answer.choices, key=lambda c: c.index)]
    the, hello = (greedy_text(lm, tokenizer, p, 6) for p in ("the", "hello"))
    assert texts == [the, the, hello, hello]
    assert answer.usage.completion_tokens == 24


def test_seeded_sampling_repeats_and_choices_differ(client, lm, tokenizer) -> None:
    ask = dict(model="tiny", prompt="the", max_tokens=16, temperature=1.5, seed=7)
    first = client.completions.create(**ask, n=3)
    again = client.completions.create(**ask, n=3)
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices]
    assert len(set(texts)) > 1  # each choice draws from a stream of its own
    ids = torch.tensor([tokenizer.encode("the")])  # choice 0 is `generate` with the seed
    new = generate(lm, ids, max_new_tokens=16, temperature=1.5, seed=7)[0]
    assert texts[0] == tokenizer.decode(new.tolist())


def test_models_and_health(client, url) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    status, body = request(url, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == "tiny"


# ---- bad input and faults: each answers with OpenAI's error shape, then the server is fine --


JSON_HEADERS = {"Content-Type": "application/json"}


def request(
    url: str, method: str, path: str, body: bytes | str | dict | None = None, **headers: str
) -> tuple[int, dict]:
    """A raw HTTP request (to send what the openai client never would)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    if isinstance(body, dict):
        body = json.dumps(body)
    connection.request(
        method, path, body=body, headers={"Content-Type": "application/json", **headers}
    )
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else {}


def still_fine(url: str, lm, tokenizer) -> None:
    status, _ = request(url, "GET", "/health")
    assert status == 200
    body = {"model": "tiny", "prompt": "the", "max_tokens": 5, "temperature": 0}
    status, answer = request(url, "POST", "/v1/completions", body)
    assert status == 200 and answer["choices"][0]["text"] == greedy_text(lm, tokenizer, "the", 5)


GOOD_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
BAD_BODIES = {
    "malformed JSON": ("/v1/chat/completions", '{"model": "tiny", "messages": [', 400, None),
    "not an object": ("/v1/chat/completions", "[1, 2]", 400, None),
    "unknown field": ("/v1/chat/completions", GOOD_CHAT | {"frobnicate": 1}, 400, "frobnicate"),
    "wrong type": ("/v1/chat/completions", GOOD_CHAT | {"max_tokens": "many"}, 400, "max_tokens"),
    "empty messages": ("/v1/chat/completions", GOOD_CHAT | {"messages": []}, 400, "messages"),
    "unknown role": (
        "/v1/chat/completions",
        GOOD_CHAT | {"messages": [{"role": "wizard", "content": "hi"}]},
        400,
        "messages.0.role",
    ),
    "no model": ("/v1/completions", {"prompt": "the"}, 400, "model"),
    "other model": ("/v1/completions", {"model": "/etc/passwd", "prompt": "the"}, 404, "model"),
    "max_tokens 0": (
        "/v1/completions",
        {"model": "tiny", "prompt": "a", "max_tokens": 0},
        400,
        "max_tokens",
    ),
    "max_tokens huge": (
        "/v1/completions",
        {"model": "tiny", "prompt": "a", "max_tokens": 10**9},
        400,
        "max_tokens",
    ),
    "prompt over the context": (
        "/v1/completions",
        {"model": "tiny", "prompt": "the " * 40},
        400,
        None,
    ),
    "empty prompt": ("/v1/completions", {"model": "tiny", "prompt": ""}, 400, "prompt"),
    "unsupported option": (
        "/v1/completions",
        {"model": "tiny", "prompt": "a", "logprobs": True},
        400,
        "logprobs",
    ),
    "temperature out of range": (
        "/v1/completions",
        {"model": "tiny", "prompt": "a", "temperature": 5},
        400,
        "temperature",
    ),
    "embeddings from an LM": ("/v1/embeddings", {"model": "tiny", "input": "a"}, 400, "model"),
    "unknown path": ("/v1/engines", {}, 404, None),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_requests_get_an_openai_error_and_the_server_goes_on(case, url, lm, tokenizer):
    path, body, expected_status, param = BAD_BODIES[case]
    status, answer = request(url, "POST", path, body)
    assert status == expected_status, answer
    error = answer["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    still_fine(url, lm, tokenizer)


def test_the_openai_client_raises_its_own_exceptions(client) -> None:
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="tiny", prompt="the quick brown fox " * 3, max_tokens=60)
    with pytest.raises(openai.NotFoundError, match="serves 'tiny'"):
        client.completions.create(model="gpt-4", prompt="a", max_tokens=1)


def wait_for_rows(url: str, rows: int, timeout_s: float = 5.0) -> bool:
    """Whether /health reports `rows` decoding rows within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while request(url, "GET", "/health")[1]["decoding"] != rows:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_client_that_disconnects_mid_stream_frees_its_row(tokenizer) -> None:
    """A long answer (2000 tokens, seconds of decoding) whose client goes away after the
    first chunk: its row must leave the batch at once, not when the answer is complete."""
    lm = tiny_lm(tokenizer, max_seq_len=2048)
    with serving(create_app(lm, tokenizer, ServerSettings(model_name="tiny"))) as url:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        body = {"model": "tiny", "prompt": "the", "max_tokens": 2000, "stream": True}
        connection.request("POST", "/v1/completions", json.dumps(body), JSON_HEADERS)
        response = connection.getresponse()
        assert response.status == 200
        assert response.read(6) == b"data: "  # decoding has begun
        assert wait_for_rows(url, 1)  # the row joins the batch as its first token goes out
        connection.sock.close()  # the client goes away without reading the rest
        connection.close()
        gone = time.monotonic()
        assert wait_for_rows(url, 0)
        freed_after = time.monotonic() - gone
        alone = time.monotonic()
        greedy_text(lm, tokenizer, "the", 300)
        three_hundred_tokens = time.monotonic() - alone
        assert freed_after < three_hundred_tokens  # long before 2000 tokens were decoded
        still_fine(url, lm, tokenizer)


def test_fifty_requests_against_four_rows_queue_or_get_429(lm, tokenizer) -> None:
    settings = ServerSettings(model_name="tiny", max_batch=4, max_queue=6)
    with serving(create_app(lm, tokenizer, settings)) as url:
        body = {"model": "tiny", "prompt": "the", "max_tokens": 30, "temperature": 0}
        with ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(lambda _: request(url, "POST", "/v1/completions", body), range(50))
            )
        statuses = [status for status, _ in answers]
        assert set(statuses) == {200, 429}  # some queued and answered, some refused; no 5xx
        refused = [answer for status, answer in answers if status == 429]
        assert all(a["error"]["type"] == "rate_limit_error" for a in refused)
        expected = greedy_text(lm, tokenizer, "the", 30)
        assert all(a["choices"][0]["text"] == expected for s, a in answers if s == 200)
        still_fine(url, lm, tokenizer)


def test_a_hundred_requests_from_sixteen_clients_are_all_answered(lm, tokenizer) -> None:
    from benchmarks.load import run_load

    settings = ServerSettings(model_name="tiny", max_batch=8, max_queue=16)
    with serving(create_app(lm, tokenizer, settings)) as url:
        bodies = [
            {"model": "tiny", "prompt": PROMPTS[i % 8], "max_tokens": 5 + i % 11, "temperature": 0}
            for i in range(100)
        ]
        load = run_load(f"{url}/v1/completions", bodies, clients=16, deadline_s=120)
        assert [o.status for o in load.outcomes] == [200] * 100
        assert sorted(o.tokens for o in load.outcomes) == sorted(b["max_tokens"] for b in bodies)
        assert all(
            o.first_token_s is not None and o.first_token_s <= o.latency_s for o in load.outcomes
        )
        still_fine(url, lm, tokenizer)


def test_api_key_and_body_limit(lm, tokenizer) -> None:
    settings = ServerSettings(model_name="tiny", api_key="s3cret", max_body_bytes=2000)
    with serving(create_app(lm, tokenizer, settings)) as url:
        body = {"model": "tiny", "prompt": "the", "max_tokens": 3}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, answer = request(url, "POST", "/v1/completions", body, **headers)
            assert status == 401 and answer["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(**body, temperature=0).choices[0].text
        assert request(url, "GET", "/health")[0] == 200  # liveness needs no key
        auth = {"Authorization": "Bearer s3cret"}
        status, answer = request(
            url, "POST", "/v1/completions", body | {"prompt": "a" * 3000}, **auth
        )
        assert status == 413 and "2000 bytes" in answer["error"]["message"]
        assert request(url, "POST", "/v1/completions", body, **auth)[0] == 200


# ---- embeddings ------------------------------------------------------------------------------


def test_embeddings_are_those_of_the_embed_pipeline(tmp_path: Path, tokenizer) -> None:
    from test_generation import tiny
    from tformer.pipelines import embed

    encoder = tiny("encoder", max_seq_len=64, **tokenizer.config_ids())
    sentences = ["the quick brown fox", "hello world", "lazy dog"]
    expected = embed(encoder, tokenizer, sentences)
    with serving(create_app(encoder, tokenizer, ServerSettings(model_name="enc"))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for encoding in ("float", openai.NOT_GIVEN):  # not given: base64, decoded by the client
            answer = client.embeddings.create(
                model="enc", input=sentences, encoding_format=encoding
            )
            got = torch.tensor([d.embedding for d in answer.data])
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        assert answer.usage.prompt_tokens == sum(map(len, tokenizer.encode_batch(sentences)))
        status, body = request(url, "POST", "/v1/chat/completions", GOOD_CHAT | {"model": "enc"})
        assert status == 400 and "decoder" in body["error"]["message"]
