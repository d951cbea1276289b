"""Synthetic demo cities: procedural scenes with pixel-exact labels, rendered through two "sensors".

The demo, CI and laptops need a source/target pair with a *real* domain shift and no download: the
same kind of city (buildings, roads, vegetation, water, bare land, the five classes of the Dubai data)
seen by two very different cameras, so that a segmenter trained on one visibly fails on the other and
domain adaptation has something to fix. Rasters are written as georeferenced GeoTIFFs (UTM CRS, 0.5 m
pixels) so the whole geo path of the platform (ingest, stores, mapping, COG export) is exercised.

Pipeline: :func:`generate_scene` draws a label map from a seed; :func:`render_scene` turns it into a
"true" reflectance image (per-class base colours, per-object variation, texture, roof shading and
shadows) and passes that through a :class:`Sensor` model (cross-talk, illumination gradient, blur,
haze, gain/offset, gamma, noise) into uint8 digital numbers; :func:`make_demo_cities` writes two
cities to disk, atomically and idempotently.

A fixture of the demo, CI and tests, not part of the product's data layer.

Modules: :mod:`~semi2i.demo.scene` (classes, label maps), :mod:`~semi2i.demo.sensors` (camera models),
:mod:`~semi2i.demo.render` (label map -> image), :mod:`~semi2i.demo.cities` (cities on disk).
"""
