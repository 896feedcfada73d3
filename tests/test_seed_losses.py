"""SEED's loss against a transcription of the official one, on near-duplicate queue entries; the embedding queue."""

import pytest
import torch
import torch.nn.functional as F

from mokd_fast.methods.common.queue import EmbeddingQueue
from mokd_fast.methods.seed.losses import seed_loss, similarity_logits
from tests.helpers import assert_rel_close, run_gloo
from tests.official_seed import official_logits, official_loss

B, D, K = 8, 128, 64


def _near_duplicate_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher embeddings, and a queue whose first B entries sit at cosine ~0.9999 from the teachers.

    Random queues give one-hot targets at teacher temperature 1e-4, which cannot tell a temperature
    or precision error from the right answer; near-duplicates carry visible target mass.
    """
    gen = torch.Generator().manual_seed(seed)
    teacher = F.normalize(torch.randn(B, D, generator=gen), dim=1)
    student = torch.randn(B, D, generator=gen) + 2 * teacher  # correlated with its teacher, as after some training
    near = F.normalize(teacher + 0.0012 * torch.randn(B, D, generator=gen), dim=1)  # cos ~ 0.9999
    queue = torch.cat([near, F.normalize(torch.randn(K - B, D, generator=gen), dim=1)])
    return student, teacher, queue


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed_loss_equals_official_on_near_duplicates(seed) -> None:
    student, teacher, queue = _near_duplicate_case(seed)
    ours_in, ref_in = student.clone().requires_grad_(), student.clone().requires_grad_()
    ours = seed_loss(ours_in, teacher, queue)
    ref = official_loss(ref_in, teacher, queue.T.contiguous())
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    ours.backward()
    ref.backward()
    assert_rel_close(ours_in.grad, ref_in.grad, 1e-5, "student gradient")  # max|diff| / max|ref|
    # The case is one that can fail: the near-duplicates hold a large share of the teacher's target,
    # and ours is the official target. At 1/temperature = 1e4 a cosine's last fp32 bit moves a logit
    # by ~1e-3, so the two fp32 computations agree to 2e-3; a teacher temperature of 1.1e-4 moves it by 0.0175.
    _, logit_tea = official_logits(student, teacher, queue.T, 0.2, 1e-4)
    official_target = logit_tea.softmax(dim=1)
    mass = official_target[torch.arange(B), 1 + torch.arange(B)]
    assert (mass > 0.05).all() and (mass < 0.5).all()
    torch.testing.assert_close(similarity_logits(teacher, teacher, queue, 1e-4).softmax(dim=1), official_target,
                               rtol=0, atol=2e-3)


def test_seed_loss_is_fp32_under_autocast_where_bf16_would_tie_the_target() -> None:
    student, teacher, queue = _near_duplicate_case(0)
    exact = seed_loss(student, teacher, queue)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = seed_loss(student, teacher, queue)
        official = official_loss(student, teacher, queue.T)  # its einsums run in bf16 under autocast
        _, logit_tea = official_logits(student, teacher, queue.T, 0.2, 1e-4)
    assert ours.dtype == torch.float32 and torch.equal(ours, exact)
    # In bf16 the near-duplicate's cosine rounds to the positive's: the target splits 1/2 - 1/2.
    tied = logit_tea.float().softmax(dim=1)[torch.arange(B), 1 + torch.arange(B)]
    assert torch.allclose(tied, torch.full((B,), 0.5)) and abs(official - exact) > 1e-3


def test_no_gradient_reaches_the_teacher_or_the_queue() -> None:
    student, teacher, queue = _near_duplicate_case(3)
    teacher.requires_grad_()
    queue.requires_grad_()
    seed_loss(student.requires_grad_(), teacher, queue).backward()
    assert teacher.grad is None and queue.grad is None and student.grad is not None


def test_queue_wraps_around_and_resumes_from_its_state() -> None:
    q = EmbeddingQueue(10, 4, seed=5)
    assert torch.allclose(q.queue.norm(dim=1), torch.ones(10)) and torch.equal(q.queue, EmbeddingQueue(10, 4, 5).queue)
    first, second = torch.full((6, 4), 1.0), torch.full((6, 4), 2.0)
    q.enqueue(first)
    q.enqueue(second)
    assert q.ptr.item() == 2  # 12 writes in a queue of 10
    assert (q.queue[:2] == 2).all() and (q.queue[2:6] == 1).all() and (q.queue[6:] == 2).all()
    clone = EmbeddingQueue(10, 4, seed=9)
    clone.load_state_dict(q.state_dict())
    assert torch.equal(clone.queue, q.queue) and clone.ptr.item() == 2
    with pytest.raises(ValueError, match="do not fit a queue of 10"):
        q.enqueue(torch.zeros(11, 4))


def _ddp_enqueue(rank: int, world: int, batches: list[torch.Tensor]) -> dict:
    q = EmbeddingQueue(16, 4, seed=0)
    start = q.queue.clone()
    for batch in batches:
        q.enqueue(batch.chunk(world)[rank])  # each rank enqueues its share of the global batch
    return {"start": start, "queue": q.queue.clone(), "ptr": q.ptr.item()}


def test_two_ranks_enqueue_what_one_process_enqueues_from_the_whole_batch() -> None:
    batches = [torch.randn(6, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    results = run_gloo(_ddp_enqueue, 2, batches)
    single = EmbeddingQueue(16, 4, seed=0)
    for batch in batches:
        single.enqueue(batch)
    for rank in (0, 1):
        assert torch.equal(results[rank]["start"], results[0]["start"])  # every rank starts with one queue
        assert torch.equal(results[rank]["queue"], single.queue) and results[rank]["ptr"] == single.ptr.item()
