"""Places the plan does not cover: a question about another city's policy is out of scope.

The plan is Xiamen's. A question naming Shanghai, Shenzhen or Hainan asks about another
locality's rules, however close its topic is to a task; retrieval alone cannot tell, since the
topic words match. The gazetteer is the provincial-level divisions of China and its larger
cities (a general list, not words of particular questions); a name counts only when the plan's
own text (Chinese or English) never mentions it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# (Chinese, English) names of provincial-level divisions and major cities
GAZETTEER: tuple[tuple[str, str], ...] = (
    ("北京", "Beijing"), ("天津", "Tianjin"), ("上海", "Shanghai"), ("重庆", "Chongqing"), ("河北", "Hebei"),
    ("山西", "Shanxi"), ("内蒙古", "Inner Mongolia"), ("辽宁", "Liaoning"), ("吉林", "Jilin"),
    ("黑龙江", "Heilongjiang"), ("江苏", "Jiangsu"), ("浙江", "Zhejiang"), ("安徽", "Anhui"), ("福建", "Fujian"),
    ("江西", "Jiangxi"), ("山东", "Shandong"), ("河南", "Henan"), ("湖北", "Hubei"), ("湖南", "Hunan"),
    ("广东", "Guangdong"), ("广西", "Guangxi"), ("海南", "Hainan"), ("四川", "Sichuan"), ("贵州", "Guizhou"),
    ("云南", "Yunnan"), ("西藏", "Tibet"), ("陕西", "Shaanxi"), ("甘肃", "Gansu"), ("青海", "Qinghai"),
    ("宁夏", "Ningxia"), ("新疆", "Xinjiang"), ("香港", "Hong Kong"), ("澳门", "Macao"), ("台湾", "Taiwan"),
    ("广州", "Guangzhou"), ("深圳", "Shenzhen"), ("前海", "Qianhai"), ("横琴", "Hengqin"), ("杭州", "Hangzhou"),
    ("南京", "Nanjing"), ("苏州", "Suzhou"), ("宁波", "Ningbo"), ("武汉", "Wuhan"), ("成都", "Chengdu"),
    ("西安", "Xi'an"), ("青岛", "Qingdao"), ("大连", "Dalian"), ("沈阳", "Shenyang"), ("长沙", "Changsha"),
    ("郑州", "Zhengzhou"), ("济南", "Jinan"), ("合肥", "Hefei"), ("福州", "Fuzhou"), ("泉州", "Quanzhou"),
    ("漳州", "Zhangzhou"), ("莆田", "Putian"), ("平潭", "Pingtan"), ("三亚", "Sanya"), ("海口", "Haikou"),
    ("昆明", "Kunming"), ("南宁", "Nanning"), ("珠海", "Zhuhai"), ("东莞", "Dongguan"), ("佛山", "Foshan"),
    ("无锡", "Wuxi"), ("台北", "Taipei"), ("高雄", "Kaohsiung"), ("金门", "Kinmen"),
)


def _pattern(names: Iterable[tuple[str, str]]) -> re.Pattern[str] | None:
    parts = [re.escape(zh) for zh, _ in names] + [rf"\b{re.escape(en)}\b" for _, en in names]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class PlaceCheck:
    """Finds gazetteer places in a question that the plan's text never names."""

    def __init__(self, plan_texts: Iterable[str]) -> None:
        text = "\n".join(plan_texts)
        self._pattern = _pattern([(zh, en) for zh, en in GAZETTEER
                                  if zh not in text and not re.search(rf"\b{re.escape(en)}\b", text, re.IGNORECASE)])

    def unknown(self, question: str) -> set[str]:
        """Places named in ``question`` that the plan does not mention."""
        if self._pattern is None:
            return set()
        return {m.group(0).lower() for m in self._pattern.finditer(question)}
