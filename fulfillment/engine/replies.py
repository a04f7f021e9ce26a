"""Typed script replies: what each transition script can answer, one model per kind.

Every script replies with one JSON object whose ``v`` names what happened (``lua/*.lua``
list theirs at the top). :func:`parse` turns it into the model of that kind, for that
script, once, at the boundary (:class:`~fulfillment.engine.store.RunStore`); nothing
else reads reply JSON or compares reply strings. Times arrive as integer microseconds
of the Redis server clock (``*_us``) and leave as seconds; lists are JSON arrays and
objects JSON objects.

The kinds every transition shares: :class:`Missing` (no such run), :class:`Finished`
(the run has ended), :class:`NotLive` (this message or result is not the live one, or
there is nothing to do), :class:`Early` (not yet). Then, by script:

=============  ======================================================================
create         :class:`Created`, :class:`Exists`
begin          :class:`Started`, :class:`AlreadyDone`
complete       :class:`Moved`, :class:`Completed`, :class:`Ended`, :class:`Compensate`
retry          :class:`RetryLater`, :class:`Ended`
fail           :class:`Ended`
gate           :class:`Waiting`, :class:`AlreadyDone`
signal         :class:`Dispatch`, :class:`Recorded`, :class:`Ended`, :class:`Decided`,
               :class:`NotRequired`
cancel         :class:`CancelRequested`, :class:`Ended`, :class:`Decided`
retry_now      :class:`Dispatch`
resume         :class:`Dispatch`
redrive        :class:`Dispatch`, :class:`Compensate`
unsent         :class:`Kept`
begin_undo     :class:`Claimed`
undone         :class:`Undone`
undo_failed    :class:`RetryLater`
tick           :class:`Tick`
=============  ======================================================================
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

#: microseconds per second: times cross the Lua boundary as integer microseconds
US = 1_000_000


class Kind(StrEnum):
    """What a transition did (or why it did nothing): a reply's ``v``."""

    RUN = "run"
    DONE = "done"
    BUSY = "busy"
    STALE = "stale"
    FINISHED = "finished"
    MISSING = "missing"
    NEXT = "next"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY = "retry"
    CREATED = "created"
    EXISTS = "exists"
    CONFLICT = "conflict"
    WAITING = "waiting"
    DISPATCH = "dispatch"
    RECORDED = "recorded"
    REJECTED = "rejected"
    EARLY = "early"
    DECIDED = "decided"
    NOT_REQUIRED = "not_required"
    CANCEL_REQUESTED = "cancel_requested"
    COMPENSATE = "compensate"
    NOOP = "noop"
    OK = "ok"


def _array(value: Any) -> Any:
    """Lua's cjson encodes an empty table as ``{}``: an empty array here."""
    return [] if value == {} else value


def _seconds(value: Any) -> float:
    return int(value or 0) / US


Array = Annotated[list[str], BeforeValidator(_array)]


def _us(name: str) -> Any:
    """A field read from ``<name>_us`` (integer microseconds), in seconds."""
    return Field(default=0.0, validation_alias=f"{name}_us")


Seconds = Annotated[float, BeforeValidator(_seconds)]


class Send(BaseModel):
    """A compensation to send now: its action and the number of its message."""

    model_config = ConfigDict(frozen=True)

    action: str
    n: int


class Reply(BaseModel):
    """A script's reply; ``kind`` is its ``v``."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    kind: Kind = Field(validation_alias="v")
    #: why nothing happened, or what happened (for logs and what a task returns)
    reason: str = ""
    #: the Celery task id of an attempt this transition presumed lost (for Flower)
    lost_task: str | None = None

    def describe(self) -> str:
        """``skipped (stale: superseded by epoch 3)``: what a task returns when it did nothing."""
        why = self.reason or str(getattr(self, "status", "") or "")
        return f"skipped ({self.kind.value}{': ' + why if why else ''})"


class Sends(Reply):
    """A reply that may ask for compensations (``send``), with the run's own step time
    limits (``limits``, seconds by step) for their messages."""

    send: Annotated[list[Send], BeforeValidator(_array)] = []
    limits: dict[str, float] = {}


# --- what every transition may answer ---------------------------------------------------


class Missing(Reply):
    """No such run."""

    kind: Literal[Kind.MISSING] = Field(validation_alias="v")


class Finished(Sends):
    """The run has ended (final, or compensating). A decision that came at or after a gate's
    deadline finds the gate timed out (``decision`` ``timed_out``): its undos go now."""

    kind: Literal[Kind.FINISHED] = Field(validation_alias="v")
    status: str
    decision: str | None = None
    by: str | None = None
    gate: str | None = None


class NotLive(Reply):
    """This message or result is not the live one (``stale``), another attempt holds the
    lease (``busy``), or there is nothing to do (``noop``)."""

    kind: Literal[Kind.STALE, Kind.BUSY, Kind.NOOP] = Field(validation_alias="v")


class Early(Reply):
    """Too early: a gate's deadline, or an undo's earliest start, is ``remaining`` away."""

    kind: Literal[Kind.EARLY] = Field(validation_alias="v")
    remaining: Seconds = _us("remaining")


# --- starting a run ----------------------------------------------------------------------


class Created(Reply):
    """The run is stored; its first step's message went with it (``sent``) or is to send."""

    kind: Literal[Kind.CREATED] = Field(validation_alias="v")
    step: str
    epoch: int
    sent: int = 0


class Exists(Reply):
    """A run with this id exists: the same input (``exists``) or another (``conflict``)."""

    kind: Literal[Kind.EXISTS, Kind.CONFLICT] = Field(validation_alias="v")
    status: str


# --- a step's attempt ----------------------------------------------------------------


class Started(Reply):
    """Start attempt ``attempt`` (of the step's ``round``) with the run's ``input`` (JSON),
    its plan (``steps``), the step's ``policy`` (JSON) and the run's own time ``limits``;
    for the last step, ``results`` holds every other step's result."""

    kind: Literal[Kind.RUN] = Field(validation_alias="v")
    attempt: int
    round: int = 1
    input: str
    steps: Array
    summary: dict[str, Any] = {}
    policy: str
    limits: dict[str, float] = {}
    last: bool = False
    results: dict[str, str] = {}


class AlreadyDone(Reply):
    """The step completed already (``result``)."""

    kind: Literal[Kind.DONE] = Field(validation_alias="v")
    result: str | None = None


class Moved(Reply):
    """The step's result is recorded and the run moved on to ``step``. Its message went with
    the script (the outbox: ``sent``), or is to be sent (``dispatch``, with ``epoch``, the
    run's ``summary``, plan and ``limits``). ``replay``: the same call again."""

    kind: Literal[Kind.NEXT] = Field(validation_alias="v")
    step: str
    epoch: int | None = None
    dispatch: bool = False
    sent: int = 0
    replay: bool = False
    summary: dict[str, Any] = {}
    steps: Array = []
    limits: dict[str, float] = {}


class Completed(Reply):
    """The run completed with ``result``."""

    kind: Literal[Kind.COMPLETED] = Field(validation_alias="v")
    result: str = ""
    replay: bool = False


class Ended(Sends):
    """The run failed or was cancelled (or, a gate's rejection, failed). ``compensating``:
    it undoes ``compensations`` first (in that order; ``send``: the first now)."""

    kind: Literal[Kind.FAILED, Kind.CANCELLED, Kind.REJECTED] = Field(validation_alias="v")
    compensating: bool = False
    compensations: Array = []
    replay: bool = False


class Compensate(Sends):
    """Send the compensations in ``send`` (a late effect to undo, or a lost undo's message)."""

    kind: Literal[Kind.COMPENSATE] = Field(validation_alias="v")


class RetryLater(Reply):
    """The attempt (or undo) failed and runs again after ``delay`` (at ``next_at``, us)."""

    kind: Literal[Kind.RETRY] = Field(validation_alias="v")
    delay: Seconds = _us("delay")
    next_at: int | None = None


class Waiting(Reply):
    """The run waits at the gate until ``deadline`` (us), ``remaining`` from now."""

    kind: Literal[Kind.WAITING] = Field(validation_alias="v")
    deadline: int
    remaining: Seconds = _us("remaining")


# --- signals, cancels, operators and the watchdog ---------------------------------------


class Dispatch(Reply):
    """Send ``step`` under ``epoch`` (after ``countdown``): a gate approved, a retry run now,
    a resume, a re-drive. ``lost_task``: the message of an attempt presumed lost."""

    kind: Literal[Kind.DISPATCH] = Field(validation_alias="v")
    step: str
    epoch: int
    summary: dict[str, Any] = {}
    steps: Array = []
    limits: dict[str, float] = {}
    countdown: Seconds = _us("countdown")


class Recorded(Reply):
    """A decision before the run reached its gate: it counts when the run gets there."""

    kind: Literal[Kind.RECORDED] = Field(validation_alias="v")
    decision: str


class Decided(Reply):
    """The gate was decided already (``decision`` by ``by``)."""

    kind: Literal[Kind.DECIDED] = Field(validation_alias="v")
    decision: str
    by: str = ""
    gate: str


class NotRequired(Reply):
    """The run's plan does not have the gate."""

    kind: Literal[Kind.NOT_REQUIRED] = Field(validation_alias="v")
    gate: str


class CancelRequested(Reply):
    """The cancel is accepted; the running step finishes first (or is presumed lost)."""

    kind: Literal[Kind.CANCEL_REQUESTED] = Field(validation_alias="v")


class Kept(Reply):
    """Of the messages given, ``kept`` are recorded as unsent (those the run still waits for)."""

    kind: Literal[Kind.OK] = Field(validation_alias="v")
    kept: int = 0


# --- compensations -------------------------------------------------------------------


class Claimed(Reply):
    """The undo is claimed (``claim``); the run's ``input`` for it."""

    kind: Literal[Kind.RUN] = Field(validation_alias="v")
    claim: int
    input: str


class Undone(Sends):
    """The undo is recorded; ``remaining`` undos are open (``send``: the next, in turn);
    ``status``: the run's now."""

    kind: Literal[Kind.OK] = Field(validation_alias="v")
    remaining: int = 0
    status: str | None = None


# --- the watchdog's tick --------------------------------------------------------------


class Tick(BaseModel):
    """The reply of ``tick.lua``: a heartbeat, and for the watchdog's lock holder what is due."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    leader: bool
    now_us: int = Field(default=0, validation_alias="now")
    backlog: int = 0
    #: per workflow (in registration order): run ids whose schedule is due
    due: Annotated[list[Array], BeforeValidator(_array)] = []
    alive: Array = []
    dead: Array = []
    #: per workflow: every run in its due zset (read only when a worker is dead)
    scheduled: Annotated[list[Array], BeforeValidator(_array)] = []


# --- what each script answers ---------------------------------------------------------

NotThere = Missing | Finished | NotLive | Early
CreateReply = Created | Exists | NotThere
BeginReply = Started | AlreadyDone | NotThere
CompleteReply = Moved | Completed | Ended | Compensate | NotThere
RetryReply = RetryLater | Ended | NotThere
FailReply = Ended | NotThere
GateReply = Waiting | AlreadyDone | NotThere
SignalReply = Dispatch | Recorded | Ended | Decided | NotRequired | NotThere
CancelReply = CancelRequested | Ended | Decided | NotThere
DispatchReply = Dispatch | NotThere
RedriveReply = Dispatch | Compensate | Ended | NotThere
UnsentReply = Kept | NotThere
BeginUndoReply = Claimed | NotThere
UndoneReply = Undone | NotThere
UndoFailedReply = RetryLater | NotThere

COMMON: tuple[type[Reply], ...] = (Missing, Finished, NotLive, Early)

#: what each script may answer, by kind
REPLIES: dict[str, tuple[type[Reply], ...]] = {
    "create": (Created, Exists),
    "begin": (Started, AlreadyDone),
    "complete": (Moved, Completed, Ended, Compensate),
    "retry": (RetryLater, Ended),
    "fail": (Ended,),
    "gate": (Waiting, AlreadyDone),
    "signal": (Dispatch, Recorded, Ended, Decided, NotRequired),
    "cancel": (CancelRequested, Ended, Decided),
    "retry_now": (Dispatch,),
    "resume": (Dispatch,),
    "redrive": (Dispatch, Compensate, Ended),
    "unsent": (Kept,),
    "begin_undo": (Claimed,),
    "undone": (Undone,),
    "undo_failed": (RetryLater,),
}


def _kinds(model: type[Reply]) -> list[Kind]:
    return list(model.model_fields["kind"].annotation.__args__)  # type: ignore[union-attr]


_BY_KIND: dict[str, dict[Kind, type[Reply]]] = {
    script: {kind: model for model in (*models, *COMMON) for kind in _kinds(model)}
    for script, models in REPLIES.items()
}


def parse(script: str, reply: dict[str, Any]) -> Reply:
    """The typed form of ``script``'s JSON reply. Raises ``ValueError`` for a kind the
    script does not answer (a bug: the script and this table disagree)."""
    kind = Kind(reply["v"])
    model = _BY_KIND[script].get(kind)
    if model is None:
        raise ValueError(f"{script}.lua replied {kind.value!r}, which it does not answer")
    return model.model_validate(reply)


#: replies saying "this message is not the live one": a duplicate or superseded message
NOT_LIVE = (Missing, Finished, NotLive, Early)

__all__ = [
    "NOT_LIVE",
    "REPLIES",
    "US",
    "AlreadyDone",
    "CancelRequested",
    "Claimed",
    "Compensate",
    "Completed",
    "Created",
    "Decided",
    "Dispatch",
    "Early",
    "Ended",
    "Exists",
    "Finished",
    "Kept",
    "Kind",
    "Missing",
    "Moved",
    "NotLive",
    "NotRequired",
    "Recorded",
    "Reply",
    "RetryLater",
    "Send",
    "Sends",
    "Started",
    "Tick",
    "Undone",
    "Waiting",
    "parse",
]
