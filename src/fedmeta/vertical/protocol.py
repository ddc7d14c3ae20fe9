"""A vertical run deployed: the parties on machines of their own (`vertical.party.PartyRun`),
a coordinator between them (on Flower, the ServerApp) that relays what they send each other
and holds no ids, no columns, no labels and no model.

The protocol, one message to each party concerned per stage: PSI (each party's requests, the
partners' responses, each party's outputs; the label party then masks, for each other party,
the shared ids not held by all), the start (columns and classes, so every party builds its part
of the same split network), then a step at a time the other parties' embeddings of the batch
(after the gradient of the previous step, pulled back), the label party's step (its loss and a
gradient for each other embedding), and at the end the other parties' embeddings of the
held-out rows and the label party's scores of them. Without protection noise, this computes
what `vertical.tabular`'s simulation computes for its first seed's split network
(tests/test_vertical_protocol.py); with noise, each party draws its own.

`Send` is the transport: `send(action, {party: (values, arrays)})` returns each party's reply
as `(values, arrays)`, or raises UserError if a party failed; `answer` is a party's side.
"""

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedmeta.config import Config
from fedmeta.errors import UserError
from fedmeta.vertical.alignment import check_overlap, mask_bytes
from fedmeta.vertical.party import PartyRun
from fedmeta.vertical.split import Traffic, tensor_bytes
from fedmeta.vertical.tabular import privacy_summary

Values = dict[str, Any]
Arrays = dict[str, torch.Tensor]
Message = tuple[Values, Arrays]
Send = Callable[[str, dict[int, Message]], dict[int, Message]]


def answer(run: PartyRun, action: str, message: Message) -> Message:
    """Party `run`'s reply to `action`."""
    values, arrays = message
    if action == "describe":
        return run.describe(), {}
    if action == "psi-request":
        requests = run.psi_requests(values["partners"])
        return {f"request-{q}": request for q, request in requests.items()}, {}
    if action == "psi-serve":
        partners = values["partners"]
        responses = run.psi_responses({q: (values[f"request-{q}"], values[f"count-{q}"])
                                       for q in partners})
        return {**{f"setup-{q}": setup for q, (setup, _) in responses.items()},
                **{f"response-{q}": response for q, (_, response) in responses.items()}}, {}
    if action == "psi-output":
        run.psi_outputs({q: (values[f"setup-{q}"], values[f"response-{q}"])
                         for q in values["partners"]})
        if run.index:
            return {}, {}
        shared, masks = run.common()
        return {"common": len(run.rows), **{f"shared-{q}": n for q, n in shared.items()},
                **{f"mask-{q}": m.tolist() for q, m in masks.items() if m is not None}}, {}
    if action == "start":
        if run.index:
            run.align(np.array(values["mask"], dtype=bool) if "mask" in values else None)
        train, test = run.start(list(values["columns"]), int(values["classes"]))
        return {"train-rows": train, "test-rows": test}, {}
    if action == "embed":
        if "gradient" in arrays:
            run.pull_back(arrays["gradient"])
        return {}, {"embedding": run.embeddings(int(values["step"]))}
    if action == "label-step":
        received = [arrays[f"embedding-{q}"] for q in values["partners"]]
        loss, gradients = run.label_step(int(values["step"]), received)
        return {"loss": loss}, {f"gradient-{q}": g for q, g in zip(values["partners"], gradients)}
    if action == "finish":
        run.pull_back(arrays["gradient"])
        return {}, {"embedding": run.held_out_embeddings()}
    if action == "score":
        return run.scores([arrays[f"embedding-{q}"] for q in values["partners"]]), {}
    raise UserError(f"unknown vertical action {action!r}")


def check_parties(described: dict[int, Values]) -> None:
    """UserError (one line) unless the parties are numbered 0, 1, ..., K - 1 (K >= 2), one
    each, party 0 the label party."""
    indices = sorted(described)
    if indices != list(range(len(indices))) or len(indices) < 2:
        raise UserError(f"a vertical run needs parties 0..K-1 (K >= 2, 0 the label party), one "
                        f"node each; the nodes are parties {indices}")
    if "classes" not in described[0]:
        raise UserError("party 0 must be the label party (its file with a 'label' column)")


def align(described: dict[int, Values], send: Send) -> tuple[dict[int, Values], int]:
    """PSI between the label party and each other party, both ways, relayed: each other
    party's start values (the label party's mask, where there are more than two parties) and
    the bytes every PSI message took. UserError if the parties share too little."""
    others = sorted(described)[1:]
    partners = {p: others if p == 0 else [0] for p in described}
    requests = send("psi-request", {p: ({"partners": partners[p]}, {}) for p in described})
    served = send("psi-serve", {p: ({
        "partners": partners[p],
        **{f"request-{q}": requests[q][0][f"request-{p}"] for q in partners[p]},
        **{f"count-{q}": described[q]["rows"] for q in partners[p]}}, {}) for p in described})
    outputs = send("psi-output", {p: ({
        "partners": partners[p],
        **{f"{kind}-{q}": served[q][0][f"{kind}-{p}"] for q in partners[p]
           for kind in ("setup", "response")}}, {}) for p in described})
    label = outputs[0][0]
    check_overlap([described[p]["name"] for p in sorted(described)],
                  [label[f"shared-{q}"] for q in others], label["common"])
    masks = {q: np.array(label[f"mask-{q}"], dtype=bool) for q in others if f"mask-{q}" in label}
    psi_bytes = sum(len(value) for reply in (*requests.values(), *served.values())
                    for value in reply[0].values()) + sum(map(mask_bytes, masks.values()))
    return {q: ({"mask": masks[q].tolist()} if q in masks else {}) for q in others}, psi_bytes


def run_deployed(config: Config, described: dict[int, Values], send: Send) -> dict:
    """Align, train and score a vertical run of `config` on the parties `described` (their
    `PartyRun.describe`, by party index) through `send`; the run's summary."""
    check_parties(described)
    vertical, others = config.vertical, sorted(described)[1:]
    started_at = time.perf_counter()
    start_values, psi_bytes = align(described, send)
    aligned_at = time.perf_counter()
    shape = {"columns": [described[p]["columns"] for p in sorted(described)],
             "classes": described[0]["classes"]}
    started = send("start", {p: ({**shape, **start_values.get(p, {})}, {}) for p in described})
    train_rows, test_rows = started[0][0]["train-rows"], started[0][0]["test-rows"]
    traffic, losses, gradients, steps = Traffic(), [], {}, 0
    for _ in range(vertical.epochs):
        total = 0.0
        for _ in range(math.ceil(train_rows / vertical.batch_size)):
            embedded = send("embed", {q: ({"step": steps}, gradients.get(q, {})) for q in others})
            stepped = send("label-step", {0: ({"step": steps, "partners": others}, {
                f"embedding-{q}": embedded[q][1]["embedding"] for q in others})})
            total += stepped[0][0]["loss"]
            gradients = {q: {"gradient": stepped[0][1][f"gradient-{q}"]} for q in others}
            traffic.up += sum(tensor_bytes(embedded[q][1]["embedding"]) for q in others)
            traffic.down += sum(tensor_bytes(g["gradient"]) for g in gradients.values())
            steps += 1
        losses.append(total / train_rows)
    trained_at = time.perf_counter()
    held_out = send("finish", {q: ({}, gradients[q]) for q in others})
    scored = send("score", {0: ({"partners": others}, {
        f"embedding-{q}": held_out[q][1]["embedding"] for q in others})})
    return {
        "federation": "vertical", "deployed": True,
        "parties": [{"name": described[p]["name"], "rows": described[p]["rows"],
                     "columns": described[p]["columns"]} for p in sorted(described)],
        "aligned_rows": train_rows + test_rows, "train_rows": train_rows,
        "test_rows": test_rows, "psi_bytes": psi_bytes,
        "bytes_per_epoch": {"up": traffic.up // vertical.epochs,
                            "down": traffic.down // vertical.epochs},
        "inference_bytes": sum(tensor_bytes(held_out[q][1]["embedding"]) for q in others),
        "results": {"vertical": {**scored[0][0], "final_loss": losses[-1]}},
        "losses": losses, "privacy": privacy_summary(vertical),
        "noise": "each party's own, seeded from its operating system's entropy",
        "seconds": {"alignment": aligned_at - started_at, "training": trained_at - aligned_at,
                    "steps": steps, "per_step": (trained_at - aligned_at) / steps}}
