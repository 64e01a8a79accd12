"""The education page's code runs, and its key numbers are the correct ones.

`docs/education/losses-and-optimizers.md` corrects worked examples from the project's seed
article. Every ```python block on that page is executed here, in order, in one namespace; the
blocks assert their own numbers. The direct tests below pin the same numbers independently and
check that the page actually computed them, so an edited page with a wrong number fails.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "education" / "losses-and-optimizers.md"

# A fenced block whose info string is exactly "python"; ```text blocks (the Keras listing) are
# documentation only and are not run.
_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

DTYPE = torch.float64


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the markdown's ```python fenced blocks, in page order."""
    return [match.group(1) for match in _PYTHON_BLOCK.finditer(markdown)]


def run_blocks(blocks: list[str], name: str) -> dict[str, Any]:
    """Execute the blocks in order in one fresh namespace and return it.

    A block that raises (including a failed ``assert``) becomes an AssertionError naming the
    block, with the original exception chained.
    """
    namespace: dict[str, Any] = {"__name__": f"docs_page_{name}"}
    for index, source in enumerate(blocks, start=1):
        code = compile(source, f"<{name} python block {index}>", "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            raise AssertionError(
                f"{name}: python block {index} raised {type(exc).__name__}: {exc}\n{source}"
            ) from exc
    return namespace


@pytest.fixture(scope="module")
def page_text() -> str:
    assert PAGE.is_file(), f"missing education page: {PAGE}"
    return PAGE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page_namespace(page_text: str) -> dict[str, Any]:
    return run_blocks(python_blocks(page_text), PAGE.name)


# --- the page runs ----------------------------------------------------------------------------


def test_page_has_runnable_python_blocks(page_text: str) -> None:
    blocks = python_blocks(page_text)
    assert len(blocks) >= 8
    assert all(block.strip() for block in blocks)


def test_every_python_block_runs_in_order(page_namespace: dict[str, Any]) -> None:
    # The fixture has executed every block; the last one defines `logits` and checks both forms.
    assert "loss_from_indices" in page_namespace


def test_runner_fails_on_a_wrong_number() -> None:
    page = "```python\nvalue = 0.06\n```\n\n```python\nassert value == 0.172\n```\n"
    with pytest.raises(AssertionError, match="python block 2"):
        run_blocks(python_blocks(page), "wrong-page")


def test_runner_skips_non_python_fences() -> None:
    page = "```text\nthis is not python\n```\n```python\nok = True\n```\n"
    assert run_blocks(python_blocks(page), "mixed")["ok"] is True


# --- the page's numbers -------------------------------------------------------------------------


def test_page_mse_is_0_172(page_namespace: dict[str, Any]) -> None:
    assert page_namespace["mse"].item() == pytest.approx(0.172, abs=1e-12)
    assert page_namespace["mean_signed_error"].item() == pytest.approx(0.06, abs=1e-12)


def test_page_cross_entropy_is_about_0_116(page_namespace: dict[str, Any]) -> None:
    ce = page_namespace["ce"].item()
    assert ce == pytest.approx(-math.log(0.89), abs=1e-12)
    assert abs(ce - 0.116) < 1e-3
    assert abs(ce - 0.528) > 0.4


def test_page_sgd_step(page_namespace: dict[str, Any]) -> None:
    assert page_namespace["w"].item() == pytest.approx(0.9, abs=1e-12)


def test_page_adam_matches_hand_formula_not_the_articles(page_namespace: dict[str, Any]) -> None:
    torch_result = page_namespace["theta_torch"]
    assert_close(torch_result, adam_by_hand(bias_correction=True, eps_inside_root=False))
    assert not torch.allclose(torch_result, adam_by_hand(False, False), atol=1e-3)
    assert not torch.allclose(torch_result, adam_by_hand(True, True), atol=1e-3)


def test_page_states_the_correct_values(page_text: str) -> None:
    expected = ("0.172", "0.1165", "0.900000002", "1.900009999", "sparse_categorical_crossentropy")
    for value in expected:
        assert value in page_text
    assert "reconstruction" in page_text  # the inputs are not the article's own vectors


# --- the same numbers, independently of the page ------------------------------------------------


def test_mse_example() -> None:
    y_true = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=DTYPE)
    y_pred = torch.tensor([1.55, 1.65, 2.90, 4.55, 4.65], dtype=DTYPE)
    assert F.mse_loss(y_pred, y_true).item() == pytest.approx(0.172, abs=1e-12)
    # The article's 0.06 is what forgetting to square gives for these inputs.
    assert (y_pred - y_true).mean().item() == pytest.approx(0.06, abs=1e-12)


def test_cross_entropy_example() -> None:
    probs = torch.tensor([[0.05, 0.89, 0.06]], dtype=DTYPE)
    target = torch.tensor([1])
    ce = F.cross_entropy(probs.log(), target).item()
    assert ce == pytest.approx(F.nll_loss(probs.log(), target).item(), abs=1e-12)
    assert ce == pytest.approx(0.11653, abs=1e-5)
    # 0.528 is -ln(0.59): the loss for a different true-class probability.
    assert -math.log(0.59) == pytest.approx(0.528, abs=5e-4)
    # Probabilities passed as logits (softmax applied twice) give yet another wrong number.
    assert F.cross_entropy(probs, target).item() == pytest.approx(0.6247, abs=1e-4)


def adam_by_hand(bias_correction: bool, eps_inside_root: bool) -> torch.Tensor:
    """One Adam step from theta=[1, 2] with gradient [0.5, 1e-4], lr=0.1, default betas/eps."""
    theta = torch.tensor([1.0, 2.0], dtype=DTYPE)
    grad = torch.tensor([0.5, 1e-4], dtype=DTYPE)
    lr, beta1, beta2, eps, t = 0.1, 0.9, 0.999, 1e-8, 1
    m = (1 - beta1) * grad
    v = (1 - beta2) * grad**2
    if bias_correction:
        m = m / (1 - beta1**t)
        v = v / (1 - beta2**t)
    denom = (v + eps).sqrt() if eps_inside_root else v.sqrt() + eps
    return theta - lr * m / denom


def test_adam_step_matches_the_hand_formula() -> None:
    theta = torch.tensor([1.0, 2.0], dtype=DTYPE, requires_grad=True)
    adam = torch.optim.Adam([theta], lr=0.1)  # betas=(0.9, 0.999), eps=1e-8
    theta.grad = torch.tensor([0.5, 1e-4], dtype=DTYPE)
    adam.step()
    result = theta.detach()

    assert_close(result, adam_by_hand(bias_correction=True, eps_inside_root=False))
    assert_close(result, torch.tensor([0.900000002, 1.9000099990001], dtype=DTYPE))
    # The article's variants give visibly different parameters.
    no_correction = adam_by_hand(bias_correction=False, eps_inside_root=False)
    eps_inside = adam_by_hand(bias_correction=True, eps_inside_root=True)
    assert (result - no_correction).abs().min().item() > 0.2
    assert (result - eps_inside).abs().max().item() == pytest.approx(0.0292793, abs=1e-6)


def test_integer_and_one_hot_targets_agree() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.3, 1.2, 0.1]], dtype=DTYPE)
    labels = torch.tensor([0, 1])
    one_hot = F.one_hot(labels, num_classes=3).to(DTYPE)
    assert_close(F.cross_entropy(logits, labels), F.cross_entropy(logits, one_hot))
    with pytest.raises((RuntimeError, ValueError)):
        F.cross_entropy(logits, labels.to(DTYPE))
