"""CLI commands, save/load round trip and the compiled-artifact cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import portable
from portable.cli import main as cli_main
from portable.demo import demo_model


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    onnx.save(demo_model(), str(path))
    return str(path)


def test_demo_command(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "portable" in out


def test_info_lists_ops_and_io(demo_path: str, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["info", demo_path]) == 0
    out = capsys.readouterr().out
    assert "Conv" in out and "supported" in out and "image" in out and "probs" in out


def test_compile_then_run(demo_path: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    ptb = tmp_path / "demo.ptb"
    assert cli_main(["compile", demo_path, "-o", str(ptb), "--target", "host"]) == 0
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert cli_main(["run", str(ptb), "--input", f"image={tmp_path / 'x.npy'}", "--output", str(out)]) == 0
    got = np.load(out)["probs"]
    want = ReferenceEvaluator(demo_model()).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_run_reports_bad_input_as_error(demo_path: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert cli_main(["run", demo_path, "--input", f"image={tmp_path / 'bad.npy'}"]) == 2
    assert "expected shape (1, 3, 64, 64)" in capsys.readouterr().err


def test_save_load_roundtrip(tmp_path) -> None:
    exe = portable.compile(demo_model(), cache=False)
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    path = str(tmp_path / "m.ptb")
    exe.save(path)
    again = portable.load(path)
    np.testing.assert_array_equal(again.run(x)[0], exe.run(x)[0])
    assert again.input_names == ["image"] and again.output_names == ["probs"]


def test_second_compile_hits_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTABLE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PORTABLE_NO_CACHE", raising=False)
    from portable.compiler import driver

    calls = []
    real = driver.compile_graph

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "compile_graph", counting)
    model = demo_model()
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    first = portable.compile(model).run(x)[0]
    second = portable.compile(model).run(x)[0]
    assert len(calls) == 1, "second compile of the same model should come from the cache"
    np.testing.assert_array_equal(first, second)
    other = demo_model(seed=7)  # different weights -> different artifact
    portable.compile(other)
    assert len(calls) == 2
