"""Table 4 diversity metrics: Self-BLEU, ACS with a real (tiny) sentence-transformers model, the LLM
judge through the real OpenAI client against a local HTTP endpoint."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from evaluation import diversity


def test_average_cosine_similarity_matches_pairwise_reference():
    rng = np.random.default_rng(5)
    for m in (2, 3, 8):
        e = rng.normal(size=(m, 16))
        ref = np.mean([e[i] @ e[j] / np.linalg.norm(e[i]) / np.linalg.norm(e[j])
                       for i, j in itertools.combinations(range(m), 2)])
        assert diversity.average_cosine_similarity(e) == pytest.approx(ref, abs=1e-12)
    with pytest.raises(ValueError, match="at least two"):
        diversity.average_cosine_similarity(np.ones((1, 4)))


def test_self_bleu_extremes_and_mean_over_leave_one_out():
    import sacrebleu

    same = ["We add 3 and 4 to get 7 , so the answer is 7 ."] * 4
    assert diversity.self_bleu(same) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(200)]
    texts = [" ".join(rng.choice(words, 30)) for _ in range(5)]
    expected = np.mean([sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score / 100 for i, t in enumerate(texts)])
    assert diversity.self_bleu(texts) == pytest.approx(expected)
    disjoint = ["alpha beta gamma delta epsilon zeta", "one two three four five six", "red green blue cyan pink gray"]
    assert diversity.self_bleu(disjoint) < 0.05


def _write_run(root, name, method, responses_by_problem, correct=True):
    d = root / name
    (d / "math500").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"model_name": "M", "method": method, "train_seed": 0, "run_name": name}))
    with open(d / "math500" / "samples.jsonl", "w") as f:
        for pid, responses in responses_by_problem.items():
            for i, r in enumerate(responses):
                f.write(json.dumps({"problem_id": pid, "sample_index": i, "prompt": f"prompt of {pid}",
                                    "response": r, "correct": correct if i < 3 else False}) + "\n")
    return d


@pytest.mark.slow
def test_cli_collapsed_vs_diverse_with_embeddings(embedding_model_dir, tmp_path, capsys):
    collapsed = {f"p{k}": [f"The answer is \\boxed{{{k}}} because {k}+0={k}."] * 4 for k in range(3)}
    rng = np.random.default_rng(2)
    diverse = {f"p{k}": ["".join(rng.choice(list("abcdefghij +=0123456789"), 60)) for _ in range(4)] for k in range(3)}
    _write_run(tmp_path, "grpo", "grpo", collapsed)
    _write_run(tmp_path, "apmpo", "apmpo", diverse)
    assert diversity.main([str(tmp_path), "--embedding-model", str(embedding_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "| Model | Method | Runs | ACS | Self-BLEU | GPT-Diversity |" in out
    grpo = json.loads((tmp_path / "grpo" / "math500" / "diversity.json").read_text())
    apmpo = json.loads((tmp_path / "apmpo" / "math500" / "diversity.json").read_text())
    assert grpo["problems"] == 3 and grpo["self_bleu"] == pytest.approx(1.0) and grpo["acs"] == pytest.approx(1.0, abs=1e-5)
    assert apmpo["self_bleu"] < 0.3 and apmpo["acs"] < grpo["acs"]
    # ACS equals the pairwise reference computed from the same model's embeddings
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embedding_model_dir), device="cpu")
    ref = np.mean([diversity.average_cosine_similarity(model.encode(v)) for v in diverse.values()])
    assert apmpo["acs"] == pytest.approx(ref, abs=1e-5)
    assert "gpt_diversity" not in apmpo


class _JudgeHandler(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Score: 2"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_llm_judge_through_openai_compatible_endpoint(tmp_path, capsys, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # p0: 4 samples, 3 correct -> judged; p1: correct=False everywhere -> not judged
        d = _write_run(tmp_path, "r", "apmpo", {"p0": ["sol A", "sol B", "sol C", "wrong D"]})
        with open(d / "math500" / "samples.jsonl", "a") as f:
            for i in range(2):
                f.write(json.dumps({"problem_id": "p1", "sample_index": i, "prompt": "q", "response": "x",
                                    "correct": False}) + "\n")
        monkeypatch.setenv("JUDGE_KEY", "secret-test-key")
        url = f"http://127.0.0.1:{server.server_port}/v1"
        assert diversity.main([str(d), "--judge-base-url", url, "--judge-model", "judge-x",
                               "--judge-api-key-env", "JUDGE_KEY", "--format", "json"]) == 0
    finally:
        server.shutdown()
        thread.join(timeout=10)
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["gpt_diversity"] == 2.0
    assert rows[0]["judge"] == {"model": "judge-x", "judged": 1, "unparsed_replies": 0, "fewer_than_two_correct": 1}
    assert len(_JudgeHandler.requests) == 1
    path, body = _JudgeHandler.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-x"
    content = body["messages"][0]["content"]
    assert diversity.JUDGE_PROMPT in content and "Solution 3:\nsol C" in content and "wrong D" not in content


def test_diversity_errors(tmp_path, capsys):
    _write_run(tmp_path, "r", "grpo", {"p0": ["a", "b"]})
    assert diversity.main([str(tmp_path / "r"), "--embedding-model", str(tmp_path / "none")]) == 2
    assert "--embedding-model" in capsys.readouterr().err
    assert diversity.main([str(tmp_path / "r"), "--benchmark", "aime24"]) == 2
    assert "aime24/samples.jsonl not found" in capsys.readouterr().err
