"""Each teaching lab's page in ``docs/labs/``, rendered from its definition so the two cannot drift.

``scripts/gen_docs.py`` writes the pages; a unit test fails when a page differs from what the
definition renders.
"""

from __future__ import annotations

from netlab.teach.model import TeachingLab


def filename(tl: TeachingLab) -> str:
    return f"{tl.number}-{tl.slug}.md"


def render(tl: TeachingLab) -> str:
    lab = tl.default_name
    both = f" plus its {tl.companion_mode} twin `{lab}-nr`" if tl.companion_mode else ""
    out = [
        f"# Lab {tl.number}: {tl.title}",
        "",
        tl.goal,
        "",
        "```sh",
        f"netlab lab start {tl.number}      # stands up `{tl.topology}` in {tl.mode} as lab `{lab}`{both}",
        f"netlab lab check {tl.number}      # checks every step against the live lab; names what is missing",
        f"netlab lab hint {tl.number}       # the next step's command and a hint",
        f"netlab lab run {tl.number}        # types every step itself and checks it (what CI does)",
        "```",
        "",
        "Every command takes `--name LAB` to use another lab name. `start` reuses a running lab of that "
        "name and puts every pod back in the mesh as the topology says. Run the commands below as root from "
        "a clone of this repository (see the README). Each step's check reads the live kernel (rule counters, "
        "ipsets, routes, conntrack, listeners, open netns fds) or the ztunnels' access logs, never what the "
        "command printed; a *look* step only reads the lab, and its check proves that what it tells you to "
        "look at is there.",
        "",
    ]
    commands = "".join(s.command for s in tl.steps)
    legend = [text for key, text in (
        ("{pid:", "`{pid:NAME}` is the pid `netlab status " + lab + "` lists for process NAME"),
        ("{uid:", "`{uid:POD}` is the pod's UID (the comment on its ipset entry, `ipset list` on its node)"),
        ("{veth:", "`{veth:NODE:IP}` is the node-side veth of the pod with that IP "
                   "(`netlab exec " + lab + " NODE -- ip route show IP`)"),
    ) if key in commands]
    if legend:
        out += ["In the commands, " + "; ".join(legend) + ". `netlab lab hint` prints them filled in.", ""]
    for i, s in enumerate(tl.steps, 1):
        out += [f"## Step {i} ({s.kind}): {s.title.format(lab=lab)}", "", "```sh"]
        out += [ln.replace("{lab}", lab) for ln in s.command.splitlines()]
        out += ["```", "", f"**Look at:** {s.look}", "", f"**If stuck:** {s.hint.replace('{lab}', lab)}", ""]
    if tl.notes:
        out += ["## What it shows", "", tl.notes.strip(), ""]
    out += ["When you are done: `netlab down " + lab + "`" + (f" and `netlab down {lab}-nr`" if tl.companion_mode
                                                               else "") + ".", ""]
    return "\n".join(out)
