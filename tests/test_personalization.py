import torch

from fedmeta.data import ClientData, split_support_query
from fedmeta.evaluation import personalization_episode


def writer(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(8).repeat_interleave(6)
    x = torch.randint(0, 256, (len(y), 4, 4), generator=g, dtype=torch.uint8)
    x[:, 0, 0] = torch.arange(len(y), dtype=torch.uint8)  # an id stamped in each image
    mask = torch.arange(len(y)) % 6 >= 4  # two query examples per class
    mask[y == 7] = False  # class 7 has no query example
    return ClientData(x, y, mask)


def test_episode_draws_support_from_support_split_and_all_matching_queries():
    client = writer()
    support, query = split_support_query(client, 0.2, seed=0)
    episode = personalization_episode(support, query, ways=5, shots=3,
                                      generator=torch.Generator().manual_seed(1))
    ids = lambda x: set((x[0, :, 0, 0, 0] * 255).round().long().tolist())  # noqa: E731
    query_ids = set(torch.nonzero(client.query_mask).flatten().tolist())
    assert not ids(episode.support_x) & query_ids
    assert ids(episode.query_x) <= query_ids
    assert episode.support_y.shape == (1, 15) and episode.query_y.shape == (1, 10)
    assert torch.equal(torch.bincount(episode.support_y[0]), torch.full((5,), 3))
    original = client.y[sorted(ids(episode.query_x))]
    assert 7 not in original.tolist()  # class without queries never chosen
    # relabeling preserves class identity between support and query
    support_original = {int(client.y[i]) for i in ids(episode.support_x)}
    assert support_original == set(original.tolist())


def test_too_few_classes_gives_none():
    support, query = split_support_query(writer(), 0.2, seed=0)
    assert personalization_episode(support, query, ways=8, shots=1,
                                   generator=torch.Generator()) is None


def test_client_without_a_support_or_query_split_gives_none():
    client = writer()
    empty = ClientData(client.x[:0], client.y[:0])
    assert personalization_episode(empty, client, 2, 1, torch.Generator()) is None
    assert personalization_episode(client, empty, 2, 1, torch.Generator()) is None
