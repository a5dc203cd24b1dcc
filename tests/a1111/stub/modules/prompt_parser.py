"""Prompt schedules, AND, attention parsing and conditioning containers (stand-in).

Covers ``[a:b:N]`` (N steps, or a fraction of the steps when < 1), ``AND`` with
``:weight``, ``(x)`` x1.1, ``[x]`` /1.1, ``(x:w)`` and ``BREAK``.
"""
import re
from collections import namedtuple

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])
re_schedule = re.compile(r"\[([^\[\]:]*):([^\[\]:]*):\s*([0-9.]+)\s*\]")
re_and = re.compile(r"\bAND\b")
re_weight = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)


class SdConditioning(list):
    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)


def prompt_schedule(prompt, steps):
    """[[end_at_step, text], ...] for one prompt."""
    switches = set()
    for match in re_schedule.finditer(prompt):
        when = float(match.group(3))
        switches.add(int(when * steps) if when < 1 else int(when))
    points = sorted(s for s in switches if 0 < s < steps) + [steps]
    out = []
    for end in points:
        def pick(match, end=end):
            when = float(match.group(3))
            at = int(when * steps) if when < 1 else int(when)
            return match.group(1) if end <= at else match.group(2)
        out.append([end, re_schedule.sub(pick, prompt)])
    return out


def get_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    res, cache = [], {}
    for prompt in prompts:
        if prompt in cache:
            res.append(cache[prompt])
            continue
        schedule = prompt_schedule(prompt, steps)
        texts = SdConditioning([text for _, text in schedule], copy_from=prompts)
        conds = model.get_learned_conditioning(texts)
        items = []
        for i, (end, _) in enumerate(schedule):
            cond = {k: v[i] for k, v in conds.items()} if isinstance(conds, dict) else conds[i]
            items.append(ScheduledPromptConditioning(end, cond))
        cache[prompt] = items
        res.append(items)
    return res


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape
        self.batch = batch


def get_multicond_learned_conditioning(model, prompts, steps, hires_steps=None, use_old_scheduling=False):
    flat, index_of, per_prompt = [], {}, []
    for prompt in prompts:
        entries = []
        for part in re_and.split(prompt):
            match = re_weight.search(part)
            text, weight = (match.group(1), float(match.group(2))) if match and match.group(2) else (part, 1.0)
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            entries.append((index_of[text], weight))
        per_prompt.append(entries)
    learned = get_learned_conditioning(model, SdConditioning(flat, copy_from=prompts), steps, hires_steps)
    batch = [[ComposableScheduledPromptConditioning(learned[i], w) for i, w in entries] for entries in per_prompt]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


class DictWithShape(dict):
    @property
    def shape(self):
        return self["crossattn"].shape


def _at_step(schedules, step):
    for item in schedules:
        if step <= item.end_at_step:
            return item.cond
    return schedules[-1].cond


def _stack(conds):
    if isinstance(conds[0], dict):
        return DictWithShape({k: torch.stack([c[k] for c in conds]) for k in conds[0]})
    length = max(c.shape[0] for c in conds)
    padded = [torch.cat([c, c[-1:].repeat(length - c.shape[0], 1)]) if c.shape[0] < length else c for c in conds]
    return torch.stack(padded)


def reconstruct_cond_batch(c, current_step):
    return _stack([_at_step(schedules, current_step) for schedules in c])


def reconstruct_multicond_batch(c, current_step):
    conds, conds_list = [], []
    for composable in c.batch:
        entry = []
        for item in composable:
            entry.append((len(conds), item.weight))
            conds.append(_at_step(item.schedules, current_step))
        conds_list.append(entry)
    return conds_list, _stack(conds)


re_attention = re.compile(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    """[[text, weight], ...]; BREAK gives ["BREAK", -1]."""
    res, round_open, square_open = [], [], []

    def scale(start, factor):
        for item in res[start:]:
            item[1] *= factor

    for match in re_attention.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            res.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            scale(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale(round_open.pop(), 1.1)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / 1.1)
        else:
            parts = re_break.split(token)
            for i, part in enumerate(parts):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for start in round_open:
        scale(start, 1.1)
    for start in square_open:
        scale(start, 1 / 1.1)
    res = [item for item in res if item[0] or item[1] == -1] or [["", 1.0]]
    merged = [res[0]]
    for item in res[1:]:
        if item[1] == merged[-1][1] and item[1] != -1:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return merged
