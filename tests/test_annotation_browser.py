"""The annotator's page in a real browser: headless Chromium (Debian package) driven by Playwright (PyPI) against the
project's real Label Studio.

A new annotator signs up through the invite link, opens a 4-turn and a 10-turn dialogue, corrects a turn's emotion,
sets verdict, rating and comment, submits; `review pull` and `publish` then carry the correction into the release.
The test writes the screenshots docs/annotation.md shows (docs/img/review-4-turns.png, review-10-turns.png).
Chromium comes from scripts/browser-setup.sh (run by scripts/test.sh); without it the test skips, except in CI.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from schemas.records import Dialogue, Judgement, Turn
from schemas.text import text_hash
from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = ROOT / "docs" / "img"

LINES = [
    ("Did you see the new painting they hung in the hallway? I can't stop looking at it.", "Excited"),
    ("I did. Honestly it made me a bit uneasy, all those grey faces staring out.", "Anxious"),
    ("Uneasy? I thought the faces looked peaceful, like they finally found some rest.", "Surprised"),
    ("Maybe. It reminded me of my grandmother's house after she passed. Empty rooms, old frames.", "Sad"),
    ("I'm sorry, I didn't know it would bring that back. We can walk the other way tomorrow.", "Worried"),
    ("No, it's fine. It's good to remember her. She used to paint too, you know.", "Nostalgic"),
    ("Really? You never told me that. What did she paint?", "Curious"),
    ("Mostly the sea. Huge stormy waves, she said calm water was boring.", "Proud"),
    ("Ha, I like her already. Do you still have any of them?", "Amused"),
    ("Two, in my flat. Come over on Sunday and I'll show you, it would mean a lot.", "Grateful"),
]


def chromium_or_skip() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI needs Chromium for the browser test: scripts/browser-setup.sh did not install it")
    pytest.skip("Chromium is not installed (run `bash scripts/browser-setup.sh`)")


def seed(home: Path) -> None:
    """d4: 4 turns, judges uncertain; d10: 10 turns, the two judges disagree. Turns labelled by their intended emotion."""
    ds, ts, js = [], [], []
    for did, n, status, verdicts in (("d4", 4, "uncertain", ("uncertain", "accept")),
                                     ("d10", 10, "accepted", ("accept", "reject"))):
        lines = LINES[:n]
        ds.append(Dialogue(id=did, domain="Art", model_a="qwen-a", model_b="qwen-b", n_turns=n, status=status,
                           decided_by="judge", text_hash=text_hash([t for t, _ in lines]), taxonomy="deepdialogue"))
        ts += [Turn(id=Turn.make_id(did, j), dialogue_id=did, idx=j, speaker="AB"[j % 2], model=("qwen-a", "qwen-b")[j % 2],
                    text=t, intended_emotion=e, label=e, n_words=len(t.split())) for j, (t, e) in enumerate(lines)]
        js.append(Judgement(id=f"jl-{did}", dialogue_id=did, judge_id="llm:judge", kind="llm", coherence=4,
                            naturalness=3, domain_fit=4, safety=5, emotion_fidelity=[4] * n, verdict=verdicts[0]))
        js.append(Judgement(id=f"jc-{did}", dialogue_id=did, judge_id="checks", kind="checks", verdict=verdicts[1]))
    wh = Warehouse(home)
    wh.upsert(ds)
    wh.upsert(ts)
    wh.upsert(js)


def login(page, url: str, email: str, password: str) -> None:
    page.goto(url + "/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(lambda u: "/user/login" not in u, timeout=120_000)


def error_lines(log: Path, start: int) -> list[str]:
    with open(log, "rb") as fh:
        fh.seek(start)
        return [line for line in fh.read().decode(errors="replace").splitlines() if "[ERROR]" in line]


def cli(*args: str) -> dict:
    from typer.testing import CliRunner

    from emoforge.cli import app

    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1]) if "--json" in args else {"stdout": r.stdout}


def open_task(page, url: str, project_id: int, task_id: int) -> None:
    page.goto(f"{url}/projects/{project_id}/data?task={task_id}")
    page.get_by_text("Keep this dialogue?").wait_for(timeout=180_000)
    page.wait_for_timeout(500)


def turn_rows(page):
    return page.locator(".emo-turn").filter(has=page.locator(".emo-intended"))


def page_height(page) -> float:
    """Height of the labeling page from its title to the bottom of the verdict bar, in CSS pixels."""
    return page.evaluate("""() => {
        const top = [...document.querySelectorAll('h1,h2,h3,h4')].find(h => h.textContent === 'Review this dialogue');
        const bar = document.querySelector('.emo-bar');
        return bar.getBoundingClientRect().bottom - top.getBoundingClientRect().top; }""")


def screenshot(page, path: Path) -> None:
    """The labeling panel only (not the task list beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    box = page.evaluate("""() => {
        const top = [...document.querySelectorAll('h1,h2,h3,h4')].find(h => h.textContent === 'Review this dialogue');
        const bar = document.querySelector('.emo-bar');
        const a = top.getBoundingClientRect(), b = bar.getBoundingClientRect();
        return {x: Math.max(0, b.left - 16), y: Math.max(0, a.top - 60), width: b.width + 32, height: b.bottom - a.top + 130}; }""")
    page.screenshot(path=str(path), clip=box)


def dismiss_warning(page, text: str) -> None:
    """The required-answer warning: it must name the answer in the annotator's words; close it."""
    modal = page.locator(".ant-modal-wrap").filter(has_text=text)
    modal.wait_for(state="visible", timeout=20_000)
    for _ in range(5):  # on a loaded machine a click during the opening animation can be lost: click until closed
        modal.get_by_role("button", name="OK").click()
        try:
            modal.wait_for(state="hidden", timeout=8_000)
            return
        except Exception:  # noqa: BLE001 - still open: click again
            continue
    modal.wait_for(state="hidden", timeout=8_000)


def choose_emotion(page, row: int, emotion: str) -> None:
    turn_rows(page).nth(row).locator(".lsf-choices_layout_select button").click()
    page.get_by_role("option", name=emotion, exact=True).click()
    page.keyboard.press("Escape")


def submit(page, task_id: int) -> None:
    with page.expect_response(lambda r: f"/api/tasks/{task_id}/annotations" in r.url and r.request.method == "POST"
                              and r.status == 201, timeout=60_000):
        page.get_by_role("button", name="Submit").click()


@pytest.mark.slow
def test_annotator_reviews_in_the_browser(labelstudio, tmp_path):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    from annotation.client import connect
    from annotation.labelstudio_view import list_all
    from warehouse.publish import publish_release

    url, ls_home = labelstudio["url"], labelstudio["home"]
    log = ls_home / "labelstudio" / "server.log"
    log_start = log.stat().st_size
    home = tmp_path / "home"
    seed(home)
    title = f"browser {tmp_path.name}"
    args = ["--home", str(home), "--url", url, "--project", title]
    pushed = cli("review", "push", *args, "--audit-accepted", "0", "--audit-rejected", "0", "--json")
    assert pushed["created"] == 2 and pushed["selected"] == {"uncertain": 1, "disagreement": 1}
    client = connect(home, url=url)
    tasks = {t.data["emoforge_dialogue_id"]: t.id for t in list_all(client.tasks.list, project=pushed["project_id"])}
    invite = cli("labelstudio", "invite", "--home", str(ls_home), "--url", url)["stdout"].strip().splitlines()[-1]
    email = f"annotator-{tmp_path.name}@emoforge.test"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 2400})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # ---- sign up through the invite link (open sign-up is off) ------------------------------------------
            page.goto(invite)
            page.fill("input[name=email]", email)
            page.fill("input[name=password]", secrets.token_urlsafe(12))
            page.locator("button[type=submit]").click()
            page.wait_for_url(lambda u: "/user/signup" not in u, timeout=120_000)
            # Community Edition has no roles: the new annotator's home offers what an admin's does (docs say so)
            page.get_by_text("Create Project").first.wait_for(timeout=120_000)
            assert page.get_by_text("Invite Members").first.is_visible()

            # ---- the task list: what a reviewer sorts by, no internals --------------------------------------------
            page.goto(f"{url}/projects/{pushed['project_id']}/data")
            page.get_by_text("review_reason").first.wait_for(timeout=180_000)
            header = page.locator("[class*='dm-table__header'], .dm-table__header, [class*='table-head']").first
            head = (header.inner_text() if header.count() else page.locator("body").inner_text())
            for shown in ("review_reason", "judge_verdict", "judge_score", "domain", "n_turns"):
                assert shown in head, shown
            for hidden in ("emoforge_text_hash", "emoforge_config", "turn_0", "intended_0", "meta"):
                assert hidden not in head.split(), hidden
            for admin_only_elsewhere in ("Settings", "Import", "Export"):  # Community Edition: no roles (docs say so)
                assert page.get_by_text(admin_only_elsewhere, exact=True).first.is_visible(), admin_only_elsewhere
            page.screenshot(path=str(SHOTS / "review-task-list.png"), clip={"x": 0, "y": 0, "width": 1500, "height": 330})

            # ---- the 4-turn dialogue: reads like a conversation, nothing decided for the annotator ---------------
            open_task(page, url, pushed["project_id"], tasks["d4"])
            rows = turn_rows(page)
            assert rows.count() == 4
            assert page.locator(".emo-turn:visible").count() == 4  # the config's empty rows stay hidden
            for i, (_text, emo) in enumerate(LINES[:4]):
                row = rows.nth(i)
                assert f"Turn {i + 1}" in row.inner_text() and f"intended: {emo}" in row.inner_text()
                assert row.locator(".lsf-choices_layout_select button").inner_text().strip() == emo  # pre-filled
            names = [rows.nth(i).locator("[class*='dialoguename--']").inner_text().strip() for i in range(4)]
            assert names == ["A", "B", "A", "B"]  # real speakers, not one "author" per turn
            colours = {rows.nth(i).locator("[class*='dialoguename--']").evaluate("e => getComputedStyle(e).color")
                       for i in (0, 2)}
            assert len(colours) == 1  # A keeps its colour
            body = page.locator("body").inner_text()
            assert "00:00:00" not in body  # no audio: no time stamps
            assert page.locator("[aria-label^='Label whole utterance']").count() > 0  # drawn by Label Studio ...
            assert not any(b.is_visible() for b in page.locator("[aria-label^='Label whole utterance']").all())  # ... hidden
            assert page.locator(".lsf-audio, audio").count() == 0
            assert "llm:judge (llm): uncertain" in body and "information only" in body  # judges shown as text
            assert not page.locator("input[name=accept]").is_checked() and not page.locator("input[name=reject]").is_checked()

            # a missing required answer is named as the annotator sees it
            page.get_by_role("button", name="Submit").click()
            dismiss_warning(page, "Choose accept or reject for the dialogue")

            choose_emotion(page, 1, "Sad")
            assert turn_rows(page).nth(1).locator(".lsf-choices_layout_select button").inner_text().strip() == "Sad"
            page.locator("input[name=accept]").check()
            page.locator(".ant-rate-star").nth(3).click()
            page.locator(".emo-bar textarea").fill("turn 2 sounds sad, not excited")
            screenshot(page, SHOTS / "review-4-turns.png")
            submit(page, tasks["d4"])

            # ---- the 10-turn dialogue: one screen, well under 3,000 px -------------------------------------------
            open_task(page, url, pushed["project_id"], tasks["d10"])
            assert turn_rows(page).count() == 10
            height = page_height(page)
            assert height < 3000, f"the 10-turn page is {height:.0f} px tall"
            page.locator("input[name=reject]").check()
            page.locator(".ant-rate-star").nth(1).click()
            page.locator(".ant-rate-star").nth(1).click()  # a second click on the same star clears the rating ...
            page.get_by_role("button", name="Submit").click()
            dismiss_warning(page, "Rate the overall quality")  # ... and submit says so
            page.locator(".ant-rate-star").nth(1).click()
            page.locator(".emo-bar textarea").fill("too long and repetitive")
            screenshot(page, SHOTS / "review-10-turns.png")
            submit(page, tasks["d10"])
            assert not errors, errors
        finally:
            browser.close()
    print(json.dumps({"page_height_10_turns_px": round(height)}))

    # ---- pull and publish: the correction, the rating and the comment arrive ------------------------------------
    pulled = cli("review", "pull", *args, "--json")
    assert pulled["new"] == 2 and pulled["problems"] == 0, pulled
    reviews = {r["dialogue_id"]: r for r in Warehouse(home).query("SELECT * FROM reviews").to_pylist()}
    assert reviews["d4"]["verdict"] == "accept" and reviews["d4"]["rating"] == 4
    assert reviews["d4"]["comment"] == "turn 2 sounds sad, not excited"
    assert reviews["d4"]["turn_labels"] == [LINES[0][1], "Sad", LINES[2][1], LINES[3][1]]
    assert reviews["d10"]["verdict"] == "reject" and reviews["d10"]["rating"] == 2
    assert reviews["d4"]["annotator"] == email

    summary = publish_release(home)
    import pyarrow.parquet as pq

    rel = Path(summary["path"])
    utts = [r for f in sorted(rel.glob("data/utterances/*.parquet")) for r in pq.read_table(f).to_pylist()]
    d4 = {r["utterance_idx"]: r for r in utts if r["dialogue_id"] == "d4"}
    assert (d4[1]["emotion"], d4[1]["label_source"], d4[1]["intended_emotion"]) == ("Sad", "human", "Anxious")
    assert d4[0]["label_source"] != "human"
    assert not any(r["dialogue_id"] == "d10" for r in utts)  # rejected by the human over the judge

    # ---- our configuration put no error into the server log -------------------------------------------------------
    assert not error_lines(log, log_start), error_lines(log, log_start)[:5]


def seed_speech(home: Path) -> dict[int, str]:
    """d2: two turns with a clip each and a mixed file (1 s and 0.5 s tones). Returns turn idx -> clip path."""
    import numpy as np
    import soundfile as sf

    from schemas.records import AudioClip

    seed(home)
    rate, clips, paths = 16000, [], {}
    for idx, secs in ((0, 1.0), (1, 0.5), (None, 1.5)):
        kind = "mix" if idx is None else "turn"
        rel = f"{'mixes' if idx is None else 'clips'}/d4/d4-{kind}-{idx}.wav"
        path = home / "audio" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(rate * secs)) / rate
        sf.write(str(path), (0.2 * np.sin(2 * np.pi * 220 * t)).astype("float32"), rate)
        clips.append(AudioClip(id=f"clip-{kind}-{idx}", dialogue_id="d4", kind=kind, path=rel, engine="test",
                               voice="v", sample_rate=rate, duration_s=secs, sha256="0" * 64,
                               turn_id=None if idx is None else Turn.make_id("d4", idx)))
        if idx is not None:
            paths[idx] = str(path)
    Warehouse(home).upsert(clips)
    return paths


@pytest.mark.slow
def test_speech_dialogue_gets_players(labelstudio, tmp_path):
    """With speech: a player for the mixed dialogue and a play button per turn clip, served by Label Studio."""
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    from annotation.client import connect
    from annotation.labelstudio_view import list_all, local_file_url
    from annotation.push import push
    from schemas.taxonomy import load_taxonomy

    url, ls_home = labelstudio["url"], labelstudio["home"]
    log = ls_home / "labelstudio" / "server.log"
    log_start = log.stat().st_size
    home = tmp_path / "home"
    clip_paths = seed_speech(home)
    client = connect(home, url=url)
    rep = push(home, client, title=f"speech {tmp_path.name}", dialogue_ids=["d4"],
               emotions=load_taxonomy("deepdialogue").emotion_names)
    task = list_all(client.tasks.list, project=rep.project_id, fields="all")[0]
    assert task.data["turn_0_audio"] == local_file_url(Path(clip_paths[0])) and task.data["audio"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1600})
        try:
            login(page, url, "admin@emoforge.test", labelstudio["password"])
            open_task(page, url, rep.project_id, task.id)
            rows = turn_rows(page)
            assert rows.count() == 4
            # turns 1 and 2 have clips: a play button each; the mixed dialogue has its own player above
            assert rows.nth(0).get_by_role("button", name="play").is_visible()
            assert rows.nth(1).get_by_role("button", name="play").is_visible()
            assert page.get_by_text("Whole dialogue (mixed audio)").is_visible()
            assert not rows.nth(2).get_by_role("button", name="play").count()  # turn 3 has no clip ...
            assert "00:00:00" not in rows.nth(2).inner_text()  # ... and no empty time stamp
            for idx in (0, 1):
                status = page.evaluate("u => fetch(u).then(r => r.status)", url + task.data[f"turn_{idx}_audio"])
                assert status == 200, (idx, status)
            assert page.evaluate("u => fetch(u).then(r => r.status)", url + task.data["audio"]) == 200
            screenshot(page, SHOTS / "review-speech.png")
        finally:
            browser.close()
    assert not error_lines(log, log_start), error_lines(log, log_start)[:5]
