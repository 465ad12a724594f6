import numpy as np
import pytest

from invaders.replay.frame_replay import FrameReplay, stack_indices

GAMMA = 0.5


def frame(index: int) -> np.ndarray:
    """A frame that encodes its absolute index (never zero)."""
    return np.full((1, 2, 2), index % 250 + 1, dtype=np.uint8)


def decode(frames: np.ndarray) -> list[int]:
    """Absolute index of each stacked frame, -1 for a zero (pre-episode) frame (indices < 250)."""
    return [int(f[0, 0]) - 1 for f in frames]


def fill(replay: FrameReplay, episode_lengths: list[int], terminal_ends: bool = True):
    """Write episodes into a one-env replay; reward of transition t is t. Returns absolute slots of finals."""
    index, finals = 0, []
    for length in episode_lengths:
        for step in range(length + 1):
            final = step == length
            replay.add(
                frame(index),
                np.array([index % 6]),
                np.array([0.0 if final else float(index)]),
                np.array([terminal_ends and step == length - 1]),
                np.array([final]),
                np.array([step == 0]),
            )
            if final:
                finals.append(index)
            index += 1
    return finals


def test_stack_indices_mask_frames_before_the_episode():
    indices, real = stack_indices(np.array([10, 5]), np.array([9, 0]), 4)
    assert indices.tolist() == [[7, 8, 9, 10], [2, 3, 4, 5]]
    assert real.tolist() == [[False, False, True, True], [True, True, True, True]]


def test_frames_are_stored_once_as_uint8():
    replay = FrameReplay(1_000, 2, (84, 84), 4, 3, 0.99)
    assert replay.frames.dtype == np.uint8
    assert replay.frames.nbytes == 1_000 * 84 * 84
    assert replay.nbytes < 1.05 * 1_000 * 84 * 84 + 1_000 * 16


def test_sampled_stacks_never_cross_episode_starts():
    replay = FrameReplay(64, 1, (2, 2), 4, 1, GAMMA)
    fill(replay, [5, 5, 5])  # slots 0-5, 6-11, 12-17; finals at 5, 11, 17
    batch = replay.sample(256, np.random.default_rng(0))
    for observation in batch.observations:
        newest = decode(observation)[-1]
        start = 0 if newest < 6 else 6 if newest < 12 else 12
        expected = [i if i >= start else -1 for i in range(newest - 3, newest + 1)]
        assert decode(observation) == expected


def test_n_step_sample_matches_hand_computation():
    replay = FrameReplay(64, 1, (2, 2), 4, 3, GAMMA)
    fill(replay, [4, 6])  # transitions 0-3 (3 terminal), final slot 4; then 5-10 (10 terminal), final 11
    batch = replay.sample(512, np.random.default_rng(1))
    seen = set()
    for obs, ret, disc, nxt in zip(batch.observations, batch.returns, batch.discounts, batch.next_observations):
        t = decode(obs)[-1]
        seen.add(t)
        assert t not in (4, 11), "final observations have no transition"
        end = 3 if t < 4 else 10  # last transition of the episode, which is terminal
        steps = min(3, end - t + 1)
        assert ret == pytest.approx(sum(GAMMA**k * (t + k) for k in range(steps)))
        assert disc == pytest.approx(0.0 if t + steps - 1 == end else GAMMA**3)
        assert decode(nxt)[-1] == t + steps
    assert seen >= {3, 5, 6}


def test_truncated_episode_bootstraps_from_its_final_observation():
    replay = FrameReplay(64, 1, (2, 2), 4, 3, GAMMA)
    fill(replay, [4, 6], terminal_ends=False)
    batch = replay.sample(512, np.random.default_rng(2))
    for obs, disc, nxt in zip(batch.observations, batch.discounts, batch.next_observations):
        t = decode(obs)[-1]
        if t in (2, 3):  # the window reaches the final slot 4 after 4 - t transitions
            assert decode(nxt)[-1] == 4
            assert disc == pytest.approx(GAMMA ** (4 - t))


def test_ring_wraparound_keeps_stacks_consistent():
    replay = FrameReplay(16, 1, (2, 2), 4, 2, GAMMA)
    fill(replay, [30, 12])  # 44 slots through a 16-slot ring
    batch = replay.sample(512, np.random.default_rng(3))
    oldest = replay.written - replay.capacity_per_env
    for obs, nxt in zip(batch.observations, batch.next_observations):
        indices = decode(obs)
        newest = indices[-1]
        assert newest >= oldest + 3
        real = [i for i in indices if i >= 0]
        assert real == list(range(newest - len(real) + 1, newest + 1))
        assert decode(nxt)[-1] > newest


@pytest.mark.parametrize("games", [2, 8], ids=["partly-filled", "wrapped"])
def test_state_round_trip_restores_every_field_and_the_same_samples(games):
    """Two rings with terminals, time-limit cuts and several episode starts, before and after wrapping."""
    replay = FrameReplay(64, 2, (2, 2), 4, 3, GAMMA)
    rng = np.random.default_rng(4)
    step = np.zeros(2, dtype=int)
    lengths = [[5, 9, 3, 7] * 2, [4, 6, 8, 5] * 2]
    game = np.zeros(2, dtype=int)
    while game.min() < games:
        final = step == np.array([lengths[env][game[env] % 8] for env in range(2)])
        last = step == np.array([lengths[env][game[env] % 8] - 1 for env in range(2)])
        replay.add(
            np.stack([frame(int(replay.written + env)) for env in range(2)])[:, 0],
            rng.integers(0, 6, 2),
            rng.normal(size=2).astype(np.float32) * ~final,
            last & (game % 2 == 0),  # even games end in a terminal, odd ones are cut by a time limit
            final,
            step == 0,
        )
        step = np.where(final, 0, step + 1)
        game += final
    state = {key: np.copy(value) for key, value in replay.state_dict().items()}
    restored = FrameReplay(64, 2, (2, 2), 4, 3, GAMMA)
    restored.load_state_dict(state)
    for name in ("frames", "actions", "rewards", "terminals", "finals", "episode_starts"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(replay, name), err_msg=name)
    assert restored.written == replay.written and replay.terminals.any() and replay.finals.sum() >= 4
    np.testing.assert_array_equal(restored._current_start, replay._current_start)
    a = replay.sample(64, np.random.default_rng(5))
    b = restored.sample(64, np.random.default_rng(5))
    for field in ("observations", "actions", "returns", "discounts", "next_observations"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_rings_keep_uint8_actions_and_float32_rewards():
    replay = FrameReplay(100, 2, (84, 84), 4, 3, GAMMA)
    assert (replay.actions.dtype, replay.rewards.dtype) == (np.uint8, np.float32)
    per_slot = 84 * 84 + 1 + 4 + 1 + 1 + 8  # frame, action, reward, terminal, final, episode start
    assert replay.nbytes == 100 * per_slot


def test_sampleable_starts_leave_room_for_the_frame_stack_and_the_n_steps():
    replay = FrameReplay(16, 1, (2, 2), 4, 2, GAMMA)
    assert replay.sampleable() == 0
    fill(replay, [6])  # 7 slots written
    assert replay.sampleable() == 7 - 2 - 3  # starts 3 and 4: a full stack behind, 2 steps and a next ahead
    fill(replay, [30])  # 38 slots through a 16-slot ring: the oldest kept is 22
    assert (replay._low(), replay._high()) == (22 + 3, 38 - 2)


def test_sampling_draws_again_until_no_start_is_a_final_observation():
    replay = FrameReplay(64, 1, (2, 2), 4, 1, GAMMA)
    fill(replay, [1] * 20)  # one transition then a final observation, twenty times: half the slots are finals
    batch = replay.sample(512, np.random.default_rng(4))
    starts = [decode(observation)[-1] for observation in batch.observations]
    assert all(start % 2 == 0 and replay._low() <= start < replay._high() for start in starts)
    counts = np.bincount(starts)[::2]
    assert counts.max() < 2.5 * counts[counts > 0].mean(), "each final drawn again on its own, uniformly"


def test_a_memory_holding_only_final_observations_has_nothing_to_sample():
    replay = FrameReplay(64, 1, (2, 2), 4, 1, GAMMA)
    fill(replay, [0] * 12)  # games that ended before their first transition
    with pytest.raises(RuntimeError, match="^replay memory holds no transition to sample yet$"):
        replay.sample(8, np.random.default_rng(0))
