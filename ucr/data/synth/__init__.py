"""Synthetic multi-track music rendered from MIDI with FluidSynth, written in the Slakh2100 layout.

Nothing is downloaded: the General MIDI soundfont ships inside ``pretty_midi`` and the Bach chorales inside
``music21``. Two kinds of material are generated:

- ``drums_bass``: seeded procedural grooves (kick, snare, hats, ride, fills, crashes; swing and humanisation) on the
  GM drum channel plus a bass line (GM programs 32-39) that follows a drawn chord progression.
- ``chorales``: Bach chorales from music21's offline corpus, one stem per chosen voice (soprano/alto/tenor/bass),
  each voice played by a GM instrument drawn per track.

Layout (identical to Slakh2100, so one reader serves both)::

    OUT/
      synth_summary.json                  what the last ``render_dataset`` call did
      train/ validation/ test/
        Track00001/
          mix.flac                        sum of the stems, mono, ``sample_rate`` Hz, 24-bit FLAC
          stems/S00.flac, S01.flac, ...   one mono stem per instrument / voice
          MIDI/S00.mid, S01.mid, ...      the notes of each stem
          all_src.mid                     all stems in one MIDI file (at the track root, as in Slakh2100)
          metadata.yaml                   Slakh-style fields plus ``ucr_synth``; written LAST: it marks the
                                          track complete, so an interrupted run resumes where it stopped

Every file goes through :mod:`ucr.storage` (atomic; local paths or ``s3://`` URIs). Rendering a track is a pure
function of its :class:`TrackPlan` and the arguments, so tracks can be rendered in parallel by separate workers
(:func:`render_track` + :func:`write_track`).
"""

from ucr.data.synth.compose import chorale_names
from ucr.data.synth.dataset import render_dataset, track_uri, write_track
from ucr.data.synth.plan import (DEFAULT_BASS_POOL, DEFAULT_CHORALE_POOL, DEFAULT_VOICES, MIX_PEAK, SPLITS, STEM_RMS_DB,
                                 SYNTH_KINDS, VOICES, RenderedTrack, TrackPlan, plan_tracks, track_seed)
from ucr.data.synth.render import default_soundfont, render_track, resolve_soundfont

__all__ = ["DEFAULT_BASS_POOL", "DEFAULT_CHORALE_POOL", "DEFAULT_VOICES", "MIX_PEAK", "SPLITS", "STEM_RMS_DB",
           "SYNTH_KINDS", "VOICES", "RenderedTrack", "TrackPlan", "chorale_names", "default_soundfont", "plan_tracks",
           "render_dataset", "render_track", "resolve_soundfont", "track_seed", "track_uri", "write_track"]
