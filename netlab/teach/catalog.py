"""The teaching labs, by number."""

from __future__ import annotations

from netlab.errors import LabError
from netlab.teach import lab1, lab2, lab3, lab4, lab5, lab6
from netlab.teach.model import TeachingLab

LABS: dict[int, TeachingLab] = {m.LAB.number: m.LAB for m in (lab1, lab2, lab3, lab4, lab5, lab6)}


def get(number: int) -> TeachingLab:
    if number not in LABS:
        raise LabError(f"no teaching lab {number}", hint=f"labs: {', '.join(map(str, sorted(LABS)))} (`netlab lab list`)")
    return LABS[number]
