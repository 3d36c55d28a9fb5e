"""Loaders, k-core, leave-one-out and bad-input errors for sequential-recommendation data."""

import numpy as np
import pytest

from poisonjax.core.validation import PoisonJaxInputError
from poisonjax.data.sequences import (check_sequences, k_core, leave_one_out, load_sequences, pad_left,
                                      parse_interaction_per_line, parse_user_per_line, training_pairs)

DATA = None  # the data root as poisonjax.data.data_root resolves it


def test_beauty_provenance_counts():
    # PROVENANCE.md: 22,363 users, 12,101 items, 198,502 interactions; lengths 5 / 8.88 / 204
    d = load_sequences("beauty", DATA, min_count=0)
    L = d.lengths()
    assert (d.num_users, d.num_items, d.num_interactions) == (22363, 12101, 198502)
    assert (L.min(), round(L.mean(), 2), L.max()) == (5, 8.88, 204)
    assert d.sequences[0].tolist() == [1, 2, 3, 4, 5]          # first line "1 1 2 3 4 5"
    # already 5-core: filtering keeps everything
    d5 = load_sequences("beauty", DATA, min_count=5)
    assert (d5.num_users, d5.num_items, d5.num_interactions) == (22363, 12101, 198502)


def test_video_provenance_counts_and_5core():
    # PROVENANCE.md: 287,107 interactions; 31,013 users; 23,715 items; 1 / 9.26 / 860 per user
    d = load_sequences("video", DATA, min_count=0)
    L = d.lengths()
    assert (d.num_users, d.num_items, d.num_interactions) == (31013, 23715, 287107)
    assert (L.min(), round(L.mean(), 2), L.max()) == (1, 9.26, 860)
    d5 = load_sequences("video", DATA, min_count=5)
    assert d5.lengths().min() >= 5 and d5.popularity()[1:].min() >= 5
    assert d5.num_users < d.num_users and d5.num_items < d.num_items
    # item_ids maps back to file ids
    assert d5.item_ids[d5.map_item(int(d5.item_ids[7]))] == d5.item_ids[7]


def test_subset_is_reproducible():
    a = load_sequences("beauty", DATA, num_users=500, min_count=3, seed=3)
    b = load_sequences("beauty", DATA, num_users=500, min_count=3, seed=3)
    c = load_sequences("beauty", DATA, num_users=500, min_count=3, seed=4)
    assert np.array_equal(a.user_ids, b.user_ids) and all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert not np.array_equal(a.user_ids[:50], c.user_ids[:50])


def test_k_core_hand_example():
    # item 9 appears twice -> removed; then user [9, 1] has 1 item -> removed; stable 2-core remains
    seqs = [np.array([1, 2, 3]), np.array([1, 2, 3]), np.array([9, 1]), np.array([9, 4])]
    out, item_ids, uids = k_core(seqs, k=2)
    # after removing item 4 (count 1): users 3 -> [9,1], 4 -> [9]; user 4 dropped, then 9 has count 1...
    assert [s.tolist() for s in out] == [[1, 2, 3], [1, 2, 3]]
    assert item_ids.tolist() == [0, 1, 2, 3] and uids.tolist() == [1, 2]


def test_leave_one_out_and_padding():
    seqs = [np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8])]
    sp = leave_one_out(seqs, 4)
    assert sp.train_x.tolist() == [[0, 0, 1, 2], [0, 0, 0, 0]]
    assert sp.train_y[0].tolist() == [0, 0, 2, 3]
    assert sp.valid_x.tolist() == [[0, 1, 2, 3], [0, 0, 0, 6]] and sp.valid_y.tolist() == [4, 7]
    assert sp.test_x.tolist() == [[1, 2, 3, 4], [0, 0, 6, 7]] and sp.test_y.tolist() == [5, 8]
    assert sp.history.tolist() == [[1, 2, 3, 4], [0, 0, 6, 7]]
    assert pad_left([np.array([1, 2, 3])], 2).tolist() == [[2, 3]]
    x, y = training_pairs([np.array([4, 5, 6])], 3)
    assert x.tolist() == [[0, 4, 5]] and y.tolist() == [[0, 5, 6]]


def test_unknown_item_ids_reported_with_line_numbers():
    lines = ["1 1 2 3", "2 4 x 5", "3 1 2", "4 1 99 2"]
    with pytest.raises(PoisonJaxInputError, match=r"line 2: x.*line 4: 99"):
        parse_user_per_line(lines, num_items=10, source="Beauty.txt")
    with pytest.raises(PoisonJaxInputError, match=r"line 3: -4"):
        parse_interaction_per_line(["1 1", "1 2", "2 -4", "2 3"], source="Video.txt")
    users, seqs = parse_interaction_per_line(["1 1", "1 2", "2 3"])
    assert users.tolist() == [1, 2] and [s.tolist() for s in seqs] == [[1, 2], [3]]
    with pytest.raises(PoisonJaxInputError, match=r"line 2: 0 12"):
        check_sequences("fake sequences", [[1, 2], [0, 12]], num_items=10)


def test_target_removed_by_k_core_and_unknown_dataset():
    d = load_sequences("video", DATA, min_count=5)
    full = load_sequences("video", DATA, min_count=0)
    pop = full.popularity()
    rare_file_id = int(full.item_ids[np.nonzero(pop == 1)[0][0]])
    with pytest.raises(PoisonJaxInputError, match="k-core filtering"):
        d.map_item(rare_file_id)
    with pytest.raises(PoisonJaxInputError, match="unknown dataset"):
        load_sequences("netflix", DATA)


def test_target_outside_catalog_is_a_clear_error():
    d = load_sequences("beauty", DATA, num_users=300, min_count=3)
    with pytest.raises(PoisonJaxInputError, match=r"outside the catalog.*1\.\.12101"):
        d.map_item(12102)
    with pytest.raises(PoisonJaxInputError, match="k-core"):
        d.map_item(int(np.setdiff1d(np.arange(1, 12102), d.item_ids)[0]))
