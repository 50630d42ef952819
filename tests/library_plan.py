"""The fictitious second plan of the library tests (beekeeping: a topic the real plan never touches).

Written in the shape the parser reads (header, number, notice, body, annex of numbered tasks,
closing block); every text of it says that it is a fictitious test document, not a real policy.
``examples/library/bees/`` holds the same text (tests/test_documents.py checks it). The session's
library index over it is conftest's ``library_engine``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FAKE = "（测试用虚构文件，并非真实政策）"
NUMBER = "测试〔2026〕99号"
PRIMARY = "厦府〔2026〕88号"
PREFIX = f"{NUMBER}/"
PLAN_TITLE = f"虚构市蜂业开放试点方案{FAKE}"

SOURCE = f"""
虚构市测试局文件

{NUMBER}

虚构市测试局关于印发蜂业开放试点方案{FAKE}的通知

各区测试单位：

《{PLAN_TITLE}》已经第1次测试局务会议研究通过，现印发给你们。本文件为测试用虚构文件，并非真实政策，不得作为任何依据。

（此件主动公开）

{PLAN_TITLE}

为检验多文件检索，特制定本虚构方案。本方案为测试用虚构文件，并非真实政策。

一、发展智慧蜂业

（一）建设智能蜂场

支持蜂农建设智能蜂场，推广蜂蜜溯源，提升蜂产品质量。

（二）推广蜜蜂授粉

鼓励蜂农为果园和大棚提供蜜蜂授粉服务，增加果蔬产量。

附件：蜂业开放试点任务{FAKE}

附件

蜂业开放试点任务{FAKE}

序号	任务内容
一、智能蜂场建设
1	支持蜂农建设智能蜂场，为蜂箱安装温湿度传感器。
2	推广蜂蜜溯源标签，每一瓶蜂蜜都可查询所在蜂场。
3	建立蜂蜜质量检测中心，开展蜂蜜抗生素残留检测。
二、蜜蜂授粉服务
4	鼓励蜂农为果园和大棚提供蜜蜂授粉服务。
5	设立蜂群越冬保险，补偿蜂农越冬损失。

抄送：虚构市测试单位。

虚构市测试局办公室

2026年5月1日印发
"""


def write_plan(folder: Path) -> Path:
    """The synthetic plan and its manifest, shaped like ``ingest/sources/``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bees.txt").write_text(SOURCE, encoding="utf-8")
    manifest = {"file": "bees.txt", "title": f"虚构市测试局关于印发蜂业开放试点方案{FAKE}的通知",
                "plan_title": PLAN_TITLE, "doc_number": NUMBER, "issuer": "虚构市测试局",
                "approved_by": "第1次测试局务会议", "printed": "2026-05-01", "disclosure": "主动公开",
                "annotations": "", "origin": f"Written by tests/library_plan.py {FAKE}: not a real policy.",
                "sha256": hashlib.sha256(SOURCE.encode("utf-8")).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return folder
