"""The report stage: one self-contained HTML page per sweep (page.write_report), a comparison of sweeps
(compare, compare_page) and a live page (watch); figures static (static_figures) and interactive."""
