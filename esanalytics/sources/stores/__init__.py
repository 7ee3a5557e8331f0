"""Event store layouts: one module per framework whose tables esa imports from (see
:class:`esanalytics.sources.sql.Layout`); each defines ``LAYOUT``, its layout class."""
