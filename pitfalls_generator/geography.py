"""The default knowledge graph: world geography from the ``pyworldatlas`` package.

pyworldatlas (MIT code) ships an SQLite atlas built from open sources
(GeoNames CC BY 4.0, Natural Earth and the CIA World Factbook in the public
domain, Unicode CLDR under the Unicode License v3, UN M49, reviewed border
decisions under MIT); the exact list with licences is read from the package
at build time and written into every generated dataset's ``generation.json``.

Entities: countries (GeoNames ids, ``geonames:<id>``), cities (GeoNames ids),
continents (``continent:<name>``, ours) and languages (``lang:<IANA subtag>``).
The atlas has no Wikidata ids, so none are used. Relations use Wikidata
property ids: P36 capital, P1376 capital of, P47 shares border with,
P17 country, P30 continent, P37 official language.

Entities whose label is not unique in the graph (two cities called
"Santiago", the city and the country "Singapore") are left out: scores are
per label, so an ambiguous label would make a case ambiguous.
"""

from __future__ import annotations

from collections import Counter
from importlib import metadata
from importlib.resources import files
from pathlib import Path

from pitfalls_editkit.facts import Entity
from pitfalls_generator.graph import KnowledgeGraph, graph_from_facts

RELATIONS_FILE = files("pitfalls_generator") / "data" / "geography.relations.json"
RULES_FILE = files("pitfalls_generator") / "data" / "geography.rules.json"
CITIES_PER_COUNTRY = 3  # the most populous cities of each country, plus its capital


def continent_of(continent: str | None, subregion: str | None) -> str | None:
    """The atlas's "Americas" split the usual way: South America, the rest North America."""
    if continent == "Americas":
        return "South America" if subregion == "South America" else "North America"
    return continent


def atlas_version() -> str:
    return metadata.version("pyworldatlas")


def build_geography_graph() -> KnowledgeGraph:
    """Countries, capitals, cities, borders, continents and official languages as triples."""
    from pyworldatlas import Atlas  # imported here: building the graph is the only use

    atlas = Atlas()
    facts: list[tuple[Entity, str, Entity]] = []
    countries = {}
    for country in atlas.countries():
        continent = continent_of(country.geography.continent, country.geography.subregion)
        if continent is None or country.codes.geonames is None:
            continue  # Antarctica
        entity = Entity(f"geonames:{country.codes.geonames}", country.name)
        countries[country.codes.alpha2] = entity
        continent_entity = Entity(f"continent:{continent.lower().replace(' ', '-')}", continent)
        facts.append((entity, "P30", continent_entity))
        cities = [c for c in country.major_cities if c.geonames_id is not None]
        capitals = [c for c in cities if c.capital_roles]
        largest = sorted(cities, key=lambda c: -(c.population or 0))[:CITIES_PER_COUNTRY]
        for city in {c.geonames_id: c for c in largest + capitals}.values():
            city_entity = Entity(f"geonames:{city.geonames_id}", city.name)
            facts += [(city_entity, "P17", entity), (city_entity, "P30", continent_entity)]
            if city in capitals:
                facts += [(entity, "P36", city_entity), (city_entity, "P1376", entity)]
        for language in {lang.primary_code: lang for lang in country.languages}.values():
            if not language.name.endswith(" languages"):  # collective codes ("Indic languages") are not one language
                facts.append((entity, "P37", Entity(f"lang:{language.primary_code}", language.name)))
    for alpha2, entity in countries.items():
        for neighbour in atlas.neighbors(alpha2):
            if neighbour.alpha2 in countries:
                facts.append((entity, "P47", countries[neighbour.alpha2]))
    sources = [{"name": "pyworldatlas " + atlas_version(), "license": "MIT (code)", "homepage": "https://pypi.org/project/pyworldatlas/"}]
    sources += [{"name": s.name, "license": s.license_name or "not stated", "homepage": s.homepage} for s in _atlas_sources(atlas)]
    return graph_from_facts(_unambiguous(facts), sources)


def _atlas_sources(atlas) -> list:
    france = atlas.country("France")  # every source that contributes a field of a country profile is listed on it
    seen = {s.id: s for s in france.sources}
    return sorted(seen.values(), key=lambda s: s.id)


def _unambiguous(facts: list[tuple[Entity, str, Entity]]) -> list[tuple[Entity, str, Entity]]:
    entities = {e.id: e for s, _, o in facts for e in (s, o)}
    label_count = Counter(e.label for e in entities.values())
    return [(s, r, o) for s, r, o in facts if label_count[s.label] == 1 and label_count[o.label] == 1]


def geography_files() -> tuple[Path, Path]:
    """The relations and rules files of the geography graph (package data)."""
    return Path(str(RELATIONS_FILE)), Path(str(RULES_FILE))
