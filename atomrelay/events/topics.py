"""The event topics the relay produces, their message descriptions and topic filters.

Every topic lives in the ONVIF topic namespace and is written with the ``tns1:`` prefix
(Home Assistant matches topic text literally). Per camera:

==========================================  ========  ===================================  ======================
topic                                       property  Source items                         Data items
==========================================  ========  ===================================  ======================
``tns1:VideoSource/MotionAlarm``            yes       ``Source`` = VideoSource token       ``State`` xs:boolean
``tns1:RuleEngine/CellMotionDetector/       yes       ``VideoSourceConfigurationToken``,   ``IsMotion``
Motion``                                              ``Rule`` = ``MotionDetectorRule``    xs:boolean
``tns1:RuleEngine/ObjectDetector/Object``   no        ``VideoSourceConfigurationToken``,   ``ClassTypes``
                                                      ``Rule`` = ``ObjectDetectorRule``    tt:ObjectType
``tns1:RuleEngine/MyRuleDetector/           yes       ``Source`` = VideoSource token       ``State`` xs:boolean
PeopleDetect``, ``.../VehicleDetect``,
``.../DogCatDetect``
``tns1:VideoSource/SignalLoss``             yes       ``Source`` = VideoSource token       ``State`` xs:boolean
==========================================  ========  ===================================  ======================

MotionAlarm and CellMotionDetector carry the same motion state (Home Assistant and most
NVRs read one or the other). ObjectDetector is a pulse per recognised object class
(``Human``, ``Vehicle``, ``Animal``), one SimpleItem of Data so that Scrypted's reader
takes it. The MyRuleDetector topics (Reolink's, which Home Assistant turns into Person,
Vehicle and Pet Detection sensors) carry the same recognitions as states: true on a
recognition of the class, false ``motion_timeout`` after the last one. SignalLoss is
true while the health monitor reports the camera ``offline``.
Tokens are the Media service's (``atomrelay.onvif.tokens``).

Topic filters follow Core "Topic Filter": the Concrete and ConcreteSet dialects, ``|``
alternatives and ``//.`` subtrees; a prefix must name the ONVIF topic namespace.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Callable

from lxml.etree import QName, _Element

from atomrelay.onvif import tokens
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker
from atomrelay.xml.xstypes import xs_bool

CONCRETE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete"
CONCRETE_SET = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
SIMPLE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Simple"
DIALECTS = (CONCRETE, CONCRETE_SET)
"""The TopicExpressionDialects GetEventProperties announces (both are mandatory)."""
_ACCEPTED_DIALECTS = frozenset(
    {*DIALECTS, SIMPLE, "http://docs.oasis-open.org/wsnt/t-1/TopicExpression/ConcreteSet"}
)
"""Also accepted: the Simple dialect (a root topic is a valid concrete path) and the
misspelt ConcreteSet URI of the Core spec's own GetEventPropertiesResponse example."""

OBJECT_CLASSES = ("Human", "Vehicle", "Animal")
"""tt:ObjectType values the ObjectDetector topic carries."""

_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")
MAX_ALTERNATIVES = 16
"""Most ``|`` alternatives in one TopicExpression (the relay produces 7 topics); a longer one is an InvalidFilter."""
MAX_TOPIC_DEPTH = 8
"""Most segments in one alternative's topic path (the relay's deepest topic has 3)."""


@dataclass(frozen=True)
class Item:
    """One SimpleItemDescription: a name and the QName of its simple type."""

    name: str
    type: str


@dataclass(frozen=True)
class Topic:
    """One topic of the relay's topic set and the message that it carries."""

    path: tuple[str, ...]
    """Topic names below the ONVIF topic namespace, e.g. ``("VideoSource", "MotionAlarm")``."""
    is_property: bool
    source: tuple[Item, ...]
    data: tuple[Item, ...]
    rule: str | None = None
    """The ``Rule`` Source item's value for rule engine topics."""

    @property
    def text(self) -> str:
        """The topic as written in a notification: ``tns1:A/B``."""
        return "tns1:" + "/".join(self.path)

    def source_items(self, camera_id: str) -> tuple[tuple[str, str], ...]:
        """The (name, value) Source items of this topic's messages for one camera."""
        values: dict[str, Callable[[str], str]] = {
            "Source": tokens.video_source,
            "VideoSourceConfigurationToken": tokens.video_source_configuration,
        }
        items = []
        for item in self.source:
            value = self.rule if item.name == "Rule" else values[item.name](camera_id)
            items.append((item.name, value or ""))
        return tuple(items)


_REFERENCE = "tt:ReferenceToken"
_BOOLEAN = "xs:boolean"

MOTION_ALARM = Topic(("VideoSource", "MotionAlarm"), True, (Item("Source", _REFERENCE),), (Item("State", _BOOLEAN),))
CELL_MOTION = Topic(
    ("RuleEngine", "CellMotionDetector", "Motion"),
    True,
    (Item("VideoSourceConfigurationToken", _REFERENCE), Item("Rule", "xs:string")),
    (Item("IsMotion", _BOOLEAN),),
    rule="MotionDetectorRule",
)
OBJECT = Topic(
    ("RuleEngine", "ObjectDetector", "Object"),
    False,
    (Item("VideoSourceConfigurationToken", _REFERENCE), Item("Rule", "xs:string")),
    (Item("ClassTypes", "tt:ObjectType"),),
    rule="ObjectDetectorRule",
)
_SOURCE_STATE = ((Item("Source", _REFERENCE),), (Item("State", _BOOLEAN),))
PEOPLE = Topic(("RuleEngine", "MyRuleDetector", "PeopleDetect"), True, *_SOURCE_STATE)
VEHICLE = Topic(("RuleEngine", "MyRuleDetector", "VehicleDetect"), True, *_SOURCE_STATE)
DOG_CAT = Topic(("RuleEngine", "MyRuleDetector", "DogCatDetect"), True, *_SOURCE_STATE)
SIGNAL_LOSS = Topic(("VideoSource", "SignalLoss"), True, (Item("Source", _REFERENCE),), (Item("State", _BOOLEAN),))

CLASS_TOPICS = {"Human": PEOPLE, "Vehicle": VEHICLE, "Animal": DOG_CAT}
"""The MyRuleDetector state topic of each object class."""

TOPICS = (MOTION_ALARM, CELL_MOTION, OBJECT, PEOPLE, VEHICLE, DOG_CAT, SIGNAL_LOSS)
"""Every topic the relay produces, in topic-set order."""

_NSMAP: dict[str | None, str] = {"wstop": ns.WSTOP, "tns1": ns.TNS1, "tt": ns.TT, "xs": ns.XSD}
_WSTOP = Maker(ns.WSTOP, _NSMAP)
_TT = Maker(ns.TT, _NSMAP)
_TNS1 = Maker(ns.TNS1, _NSMAP)
_PLAIN = Maker(None)
_TOPIC_ATTRIBUTE = ns.q(ns.WSTOP, "topic")


def _description(topic: Topic) -> _Element:
    def items(group: str, described: tuple[Item, ...]) -> _Element:
        return _TT(group, *(_TT("SimpleItemDescription", {"Name": i.name, "Type": i.type}) for i in described))

    return _TT(
        "MessageDescription",
        {"IsProperty": xs_bool(topic.is_property)},
        items("Source", topic.source),
        items("Data", topic.data),
    )


@functools.lru_cache(maxsize=1)
def _topic_set() -> _Element:
    root = _WSTOP("TopicSet")
    for topic in TOPICS:
        parent = root
        for depth, name in enumerate(topic.path):
            last = depth == len(topic.path) - 1
            found = None
            for child in parent:
                if QName(child).localname == name:
                    found = child
            if found is None:
                found = _TNS1(name) if depth == 0 else _PLAIN(name)
                parent.append(found)
            if last:
                found.set(_TOPIC_ATTRIBUTE, "true")
                found.append(_description(topic))
            parent = found
    return root


def topic_set() -> _Element:
    """A fresh ``wstop:TopicSet`` with every topic and its MessageDescription (built once)."""
    return copy.deepcopy(_topic_set())


class FilterError(ValueError):
    """A topic filter the relay cannot honour; the message says why."""


@dataclass(frozen=True)
class TopicFilter:
    """A parsed TopicExpression: alternatives, each a topic path or a ``//.`` subtree."""

    alternatives: tuple[tuple[tuple[str, ...], bool], ...]
    """(path, subtree) pairs."""

    def matches(self, topic: Topic) -> bool:
        """Whether notifications on ``topic`` pass the filter."""
        for path, subtree in self.alternatives:
            if topic.path == path or (subtree and topic.path[: len(path)] == path):
                return True
        return False


def parse_topic_expression(text: str, dialect: str, nsmap: dict[str | None, str]) -> TopicFilter:
    """Parse a TopicExpression of an accepted dialect; raise FilterError if it is invalid
    or selects none of the relay's topics.

    ``nsmap`` is the namespace map in scope at the expression element (prefixes in the
    text resolve through it; an undeclared ``tns1`` is taken as the ONVIF namespace).
    """
    if dialect not in _ACCEPTED_DIALECTS:
        raise FilterError(f"the topic expression dialect {dialect!r} is not supported")
    if text.count("|") >= MAX_ALTERNATIVES:
        raise FilterError(f"a topic expression may have at most {MAX_ALTERNATIVES} alternatives")
    alternatives: list[tuple[tuple[str, ...], bool]] = []
    for part in text.split("|"):
        part = part.strip()
        subtree = part.endswith("//.")
        if subtree:
            part = part[:-3]
        segments = part.split("/")
        if not part or any(not s for s in segments):
            raise FilterError(f"{text.strip()[:100]!r} is not a valid topic expression")
        if len(segments) > MAX_TOPIC_DEPTH:
            raise FilterError(f"{part[:100]!r} has more than {MAX_TOPIC_DEPTH} levels")
        path = []
        for index, segment in enumerate(segments):
            prefix, _, local = segment.rpartition(":")
            if not _NCNAME.match(local) or (prefix and not _NCNAME.match(prefix)):
                raise FilterError(f"{segment[:60]!r} is not a topic name")
            if index == 0:
                namespace = nsmap.get(prefix or None) or (ns.TNS1 if prefix == "tns1" else None)
                if namespace != ns.TNS1:
                    raise FilterError(f"{segment[:60]!r} is not a topic of the ONVIF topic namespace")
            path.append(local)
        alternative = (tuple(path), subtree)
        if alternative not in alternatives:
            alternatives.append(alternative)
    result = TopicFilter(tuple(alternatives))
    if not any(result.matches(topic) for topic in TOPICS):
        raise FilterError(f"{text.strip()[:100]!r} selects none of the topics this device produces")
    return result
