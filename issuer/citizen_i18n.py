"""The citizen pages' strings in Chinese (default) and English.

:func:`pick_language` chooses ``?lang=`` first, then the browser's ``Accept-Language``, then
Chinese. :func:`translator` returns a lookup that falls back to Chinese for a missing English
string and raises ``KeyError`` for an unknown key (a template typo fails the tests, it is never
shown as a raw key).
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"

_ZH: dict[str, str] = {
    "title": "星级诚信卡",
    "valid": "有效",
    "not_valid_now": "当前暂时无效",
    "not_valid_now_why": "此卡目前暂停使用（例如异议核实期间）。输入查询码可查看原因。",
    "cannot_show": "此卡无法显示。",
    "cannot_show_why": "请检查二维码是否完整；如卡片已挂失或注销，请到发卡窗口办理。",
    "stars": "星级",
    "valid_until": "有效期至",
    "access_code": "查询码（8位数字，发卡时提供）",
    "show_report": "查看完整报告",
    "wrong_code": "查询码不正确。再错 {left} 次将锁定 {minutes} 分钟。",
    "locked": "查询码错误次数过多，已锁定至 {until}（北京时间），请稍后再试。",
    "session_expired": "会话已过期或无效，请重新输入查询码。",
    "csrf": "表单已过期，请返回页面重新提交。",
    "rate_limited": "请求过于频繁，请 {seconds} 秒后再试。",
    "report": "我的信用报告",
    "score": "分数",
    "class": "等级",
    "policy": "评价规则版本",
    "records": "计分记录",
    "category": "类别",
    "points": "分值",
    "legal_basis": "依据",
    "authority": "认定机关",
    "decision_date": "认定日期",
    "status": "状态",
    "effect_until": "影响期至",
    "st_counts": "计分中",
    "st_expired": "已过影响期",
    "st_repaired": "已修复",
    "st_objection": "异议核实中（暂不计分）",
    "st_withdrawn": "已撤回",
    "st_archived": "已归档",
    "st_future": "尚未生效",
    "st_not_in_catalogue": "不在计分目录内",
    "st_no_points": "不计分",
    "receipt": "评价签名回执",
    "receipt_help": "此回执由发证机关签名，可用公开密钥独立核验分数与每条记录。",
    "checks": "谁核验过我的卡",
    "checks_none": "暂无核验记录。",
    "checks_unconfigured": "核验记录查询未开通。",
    "checks_unreachable": "核验记录暂时无法获取，请稍后再试。",
    "simulator": "星级模拟",
    "sim_now": "当前",
    "sim_expiry": "{date} 记录「{category}」影响期结束后：{level}",
    "sim_repair": "自 {date} 起可申请修复记录「{category}」（需已履行义务并作出信用承诺），"
    "获准后：{level}",
    "sim_repair_now": "现在即可申请修复记录「{category}」，获准后：{level}",
    "sim_nothing": "没有会改变星级的到期或修复事项。",
    "objection": "提出异议",
    "objection_target": "异议对象",
    "objection_evaluation": "评价结果本身",
    "grounds": "理由（哪里有误、为什么）",
    "submit": "提交",
    "objection_filed": "异议已受理（编号 {id}），核实期间该记录不计分。",
    "repair": "申请信用修复",
    "record": "记录",
    "obligations_performed": "我已履行决定书规定的义务",
    "evidence": "履行义务的证明（文件编号等）",
    "commitment": "信用承诺",
    "repair_filed": "修复申请已受理（编号 {id}），决定后将通知您。",
    "repair_refused": "暂不能申请修复，原因：",
    "repair_none": "目前没有计分中的失信记录，无需修复。",
    "review": "申请人工复核",
    "review_reason": "您对评价结果有何异议",
    "review_filed": "人工复核申请已受理（编号 {id}）。",
    "refused": "未能受理：{reason}",
    "back": "返回报告",
    "logout": "退出",
    "no_grade": "尚无评价结果。",
    "grade_pending": "评价正在重新计算，请稍后再查看。",
    "language": "English",
    "none": "无",
}

_EN: dict[str, str] = {
    "title": "Star Integrity Card",
    "valid": "Valid",
    "not_valid_now": "Not valid at the moment",
    "not_valid_now_why": "This card is suspended for now (for example while an objection is "
    "checked). Enter your access code to see why.",
    "cannot_show": "This card cannot be shown.",
    "cannot_show_why": "Check that the QR code is complete; for a lost or cancelled card, "
    "visit the issuing office.",
    "stars": "Star level",
    "valid_until": "Valid until",
    "access_code": "Access code (8 digits, given with the card)",
    "show_report": "Show my full report",
    "wrong_code": "Wrong access code. {left} more wrong tries lock it for {minutes} minutes.",
    "locked": "Too many wrong access codes: locked until {until} (Beijing time). Try again later.",
    "session_expired": "Your session ended or is not valid: enter your access code again.",
    "csrf": "This form has expired: go back to the page and send it again.",
    "rate_limited": "Too many requests: try again in {seconds} seconds.",
    "report": "My credit report",
    "score": "Score",
    "class": "Class",
    "policy": "Grading policy version",
    "records": "Records",
    "category": "Category",
    "points": "Points",
    "legal_basis": "Legal basis",
    "authority": "Authority",
    "decision_date": "Decision date",
    "status": "Status",
    "effect_until": "Effect until",
    "st_counts": "counting",
    "st_expired": "expired",
    "st_repaired": "repaired",
    "st_objection": "under objection (not counting meanwhile)",
    "st_withdrawn": "withdrawn",
    "st_archived": "archived",
    "st_future": "not yet in effect",
    "st_not_in_catalogue": "not in the catalogue",
    "st_no_points": "no points",
    "receipt": "Signed grade receipt",
    "receipt_help": "Signed by the issuer: anyone can check the score and every record with "
    "the published key.",
    "checks": "Who checked my card",
    "checks_none": "No checks recorded.",
    "checks_unconfigured": "The list of checks is not available here.",
    "checks_unreachable": "The list of checks cannot be fetched right now; try again later.",
    "simulator": "Star level simulator",
    "sim_now": "Now",
    "sim_expiry": "On {date}, when the effect of “{category}” ends: {level}",
    "sim_repair": "From {date} you may apply to repair “{category}” (obligations performed "
    "and a credit commitment made); if granted: {level}",
    "sim_repair_now": "You may apply to repair “{category}” now; if granted: {level}",
    "sim_nothing": "No end of effect or repair would change your level.",
    "objection": "File an objection",
    "objection_target": "Objection against",
    "objection_evaluation": "the evaluation itself",
    "grounds": "Grounds (what is wrong and why)",
    "submit": "Send",
    "objection_filed": "Objection {id} filed; the record does not count while it is checked.",
    "repair": "Apply for credit repair",
    "record": "Record",
    "obligations_performed": "I have performed the obligations of the decision",
    "evidence": "Evidence of performance (document numbers etc.)",
    "commitment": "Credit commitment",
    "repair_filed": "Repair request {id} received; you will be told the decision.",
    "repair_refused": "Repair is not possible yet:",
    "repair_none": "No negative record counts now: there is nothing to repair.",
    "review": "Ask for human review",
    "review_reason": "What do you dispute in the evaluation?",
    "review_filed": "Review request {id} received.",
    "refused": "Not accepted: {reason}",
    "back": "Back to the report",
    "logout": "Log out",
    "no_grade": "There is no grade yet.",
    "grade_pending": "Your grade is being recalculated; look again later.",
    "language": "中文",
    "none": "none",
}

CATALOGUE: dict[str, dict[str, str]] = {"zh": _ZH, "en": _EN}


def pick_language(query_lang: str | None, accept_language: str | None) -> str:
    """``?lang=`` wins; then the first supported language in ``Accept-Language`` (in the
    order the browser gives, ignoring q-values below 0.01); Chinese otherwise."""
    if query_lang in LANGUAGES:
        return query_lang
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        if params.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00"):
            continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


def translator(language: str) -> Callable[..., str]:
    """``t(key, **values)`` in ``language``: the string with ``values`` formatted in."""
    strings = CATALOGUE.get(language, _ZH)

    def t(key: str, **values: object) -> str:
        text = strings.get(key) or _ZH[key]
        return text.format(**values) if values else text

    return t
