"""Expected answer type: does the evidence hold the kind of fact the question asks for?

A classic question-answering check. "签证费多少钱？" asks for an amount of money, "最多停留几天？"
for a duration, "哪天开始？" for a date: when the best units contain no amount, duration or date,
the plan mentions the topic but does not answer the question. The same holds for questions
asking how or where to apply, what conditions must be met, what incentive is paid or what
penalty applies: a plan says what will be opened or piloted, rarely any of these. The scope
model uses the result as one more piece of evidence. The patterns are general interrogative
forms of Chinese and English, not words of particular questions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NUM = r"(?:\d+(?:\.\d+)?|[一二两三四五六七八九十百千万]+)"

QUESTION_PATTERNS: dict[str, re.Pattern[str]] = {
    "money": re.compile(
        r"多少钱|费用|收费|(?:交|缴|付|花)多少|多少(?:费|元|万)|补贴多少|奖励多少|贴息|价格|"
        r"\bhow much (?:does|do|is|will|would)?\s*(?:it )?(?:cost|charge|pay)|\bfees?\b|\bcosts?\b|"
        r"\bprice\b|\bsubsid(?:y|ies)\b|\bgrant amount", re.IGNORECASE),
    "duration": re.compile(
        r"多久|多长时间|几天|几个月|几年|多少天|多少个?工作日|多少年|期限多长|"
        r"\bhow long\b|\bhow many (?:days|weeks|months|years|working days)\b|\bprocessing time\b",
        re.IGNORECASE),
    "date": re.compile(
        r"哪天|哪一天|什么时候|何时|哪年|几月|日期|"
        r"\bwhen (?:exactly|will|does|did|was|is)\b|\bwhat date\b|\bwhich (?:day|date|year)\b",
        re.IGNORECASE),
    "quantity": re.compile(
        r"多少|几个|几家|几条|比例|上限|下限|最低|最高|限额|额度|配额|门槛|"
        r"\bhow many\b|\bhow much\b|\bwhat (?:percentage|share|ratio|rate)\b|\bcap\b|\blimit\b|"
        r"\bminimum\b|\bmaximum\b|\bquota\b|\bthreshold\b", re.IGNORECASE),
    # how or where to do something: steps, documents, offices, counters
    "procedure": re.compile(
        r"(?:怎么|怎样|如何)(?:申请|办理?|开通|注册|报名|挂牌|领取?|缴纳?|参与|认定|备案)|"
        r"(?:哪些|什么|啥)(?:材料|手续|证件|单证|文件|流程)|(?:流程|手续)(?:是|怎|如何)|"
        r"(?:去|到|在)哪(?:里|儿)?(?:办|申请|领|买|考|挂牌|注册|报名)|"
        r"哪(?:个|家|些)(?:窗口|柜台|网站|医院|商店)|找哪(?:个|家)|谁(?:来)?审批|"
        r"\bhow (?:do|can|should|would) (?:i|we|you|one|they)\b.{0,20}\b(?:apply|register|get|obtain|claim|open|"
        r"file|enrol|enroll|sign up|list)\b|\bhow to (?:apply|register|get|obtain|claim|open|file)\b|"
        r"\bwhat (?:documents|paperwork|materials)\b|\bwhich (?:documents|counter|website|hospitals?|shops?|stores?)\b|"
        r"\bwhere (?:do|can|should) (?:i|we|you|one)\b.{0,12}\b(?:apply|go|get|buy|file|register|claim|obtain)\b|"
        r"\bwhere to\b|"
        r"\bapplication (?:process|procedure|window)\b|\bwho approves\b", re.IGNORECASE),
    # what an applicant must have: conditions, qualifications, licences, capital
    "requirement": re.compile(
        r"(?:什么|哪些|啥|哪种|何种)(?:条件|资格|要求|门槛|资质|许可证?|牌照|证书)|(?:要|需要?)(?:满足|具备|符合)什么|"
        r"注册资本|资格证|执业证|"
        r"\bwhat (?:are the )?(?:requirements|conditions|qualifications|criteria|licen[cs]e|certificate|permit)s?\b|"
        r"\beligibility (?:criteria|requirements|conditions)\b|\bregistered capital\b|\bminimum capital\b|"
        r"\bwhich (?:licen[cs]e|certificate|permit)s?\b", re.IGNORECASE),
    # money or relief handed out: subsidies, rewards, tax breaks
    "incentive": re.compile(
        r"补贴|补助|奖励|奖金|优惠|减免|返还|贴息|免税|资助|扶持资金|"
        r"\bsubsid(?:y|ies|ise[ds]?|ize[ds]?)\b|\bincentives?\b|\brewards?\b|\bbonus|"
        r"\btax (?:break|exemption|relief|incentive|rebate|holiday)s?\b|"
        r"\btax[- ]exempt|\bdiscounts?\b|\brebates?\b", re.IGNORECASE),
    "penalty": re.compile(r"罚|处罚|处分|\bfined\b|\bfines\b|\bpenalt|\bsanctions?\b", re.IGNORECASE),
}

EVIDENCE_PATTERNS: dict[str, re.Pattern[str]] = {
    "money": re.compile(rf"{_NUM}\s*(?:元|万元|亿元|美元)|\b(?:rmb|yuan|usd|us\$)\b|[¥$]\s*\d", re.IGNORECASE),
    "duration": re.compile(
        rf"{_NUM}\s*(?:个)?(?:天|日|周|月|年)(?:以内|内|以上)?|\b\d+\s*(?:days?|weeks?|months?|years?)\b",
        re.IGNORECASE),
    "date": re.compile(r"\d{4}年\d{1,2}月(?:\d{1,2}日)?|\b\d{1,2} \w+ \d{4}\b|\b\w+ \d{1,2}, \d{4}\b"),
    "quantity": re.compile(rf"\d+(?:\.\d+)?\s*(?:%|％)|{_NUM}\s*(?:项|家|个|条|倍|次)|\b\d+(?:\.\d+)?\s*(?:%|percent)|"
                           # "106 common pilot tasks", not "2 years"
                           r"\b\d+ (?:[a-z-]+ ){0,2}(?!(?:day|week|month|year|hour)s\b)[a-z]+s\b",
                           re.IGNORECASE),
    "procedure": re.compile(r"(?:提交|携带|准备)[^。；]{0,12}(?:材料|证件)|(?:窗口|柜台|网站|平台)(?:申请|办理)|"
                            r"\bsubmit\b[^.;]{0,30}\bdocuments?\b|\bapply (?:at|online|through)\b", re.IGNORECASE),
    "requirement": re.compile(rf"不低于|不少于|须具备|应具备|应当具备|至少|满{_NUM}|"
                              r"\bat least\b|\bno less than\b|\bnot less than\b|\bminimum of\b", re.IGNORECASE),
    "incentive": re.compile(r"补贴|补助|奖励|优惠|减免|返还|贴息|免税|资助|"
                            r"\bsubsid(?:y|ies|ise[ds]?|ize[ds]?)\b|\bincentive|\breward|\bexempt|\brebate|\bdiscount",
                            re.IGNORECASE),
    "penalty": re.compile(r"罚|处罚|\bpenalt|\bfines?\b|\bsanction", re.IGNORECASE),
}


def expected_types(question: str) -> set[str]:
    """The kinds of fact the question asks for (empty for yes/no and open questions)."""
    found = {kind for kind, pattern in QUESTION_PATTERNS.items() if pattern.search(question)}
    if found & {"money", "duration", "date"}:
        found.discard("quantity")  # "多少钱" and "多少天" are more specific than "多少"
    return found


def unmet_types(question: str, evidence: Iterable[str]) -> set[str]:
    """Expected kinds of fact that none of the evidence texts contains."""
    texts = list(evidence)
    return {kind for kind in expected_types(question)
            if not any(EVIDENCE_PATTERNS[kind].search(text) for text in texts)}
