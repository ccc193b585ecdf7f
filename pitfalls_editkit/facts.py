"""What an editor is asked to change: entities, relations, facts, edits, and prompt templates.

A prompt template holds exactly one ``{}``, the subject's place; every other
character is literal text (``fill`` never interprets braces, format specs or
field names, unlike ``str.format``).
"""

from __future__ import annotations

from dataclasses import dataclass

SUBJECT_SLOT = "{}"


class TemplateError(ValueError):
    """A prompt template without exactly one ``{}``."""


def check_template(template: str) -> None:
    count = template.count(SUBJECT_SLOT)
    if count != 1:
        raise TemplateError(f"prompt template {template!r} must contain '{{}}' exactly once (found {count})")


def fill(template: str, subject: str) -> str:
    """``template`` with its one ``{}`` replaced by ``subject``; all other text is kept as it is."""
    before, slot, after = template.partition(SUBJECT_SLOT)
    if not slot or SUBJECT_SLOT in after:
        check_template(template)
    return before + subject + after


@dataclass(frozen=True)
class Entity:
    id: str
    label: str


@dataclass(frozen=True)
class Relation:
    id: str
    prompt: str  # rewrite prompt, "{}" marks the subject
    query: str
    label: str


@dataclass(frozen=True)
class Fact:
    subject: Entity
    relation: Relation
    object: Entity


@dataclass(frozen=True)
class Edit:
    """``(s, r, o -> o*)``: change the object of ``relation`` for ``subject`` from ``object`` to ``new_object``.

    ``relation.prompt`` is the rewrite prompt (``fill(prompt, subject.label)``
    is the text whose continuation should become ``new_object.label``).
    """

    subject: Entity
    relation: Relation
    object: Entity
    new_object: Entity

    @property
    def prompt(self) -> str:
        """The rewrite prompt with the subject filled in."""
        return fill(self.relation.prompt, self.subject.label)

    def describe(self) -> str:
        return f"{self.prompt} [{self.object.label} -> {self.new_object.label}]"


@dataclass(frozen=True)
class ExampleEdit:
    """An edit of the run's dataset with its relation's paraphrase templates: material for editors that learn from
    examples (IKE's demonstrations, WISE's unrelated prompts). ``EditorSettings.dataset_edits()`` gives them."""

    edit: Edit
    paraphrases: tuple[str, ...] = ()  # prompt templates with one "{}", besides edit.relation.prompt
