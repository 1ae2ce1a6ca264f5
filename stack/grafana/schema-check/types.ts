// The types the generated files check the dashboards against (check.mjs
// writes one file per dashboard: `const … = {panel} satisfies Panels["<type>"]`).
// Everything comes from @grafana/schema, the release of the pinned Grafana's
// minor; this file only loosens it the way Grafana reads dashboard JSON.

import type {
  AnnotationContainer,
  AnnotationQuery as SchemaAnnotationQuery,
  Dashboard,
  VariableModel as SchemaVariableModel,
} from '@grafana/schema';
import type * as raw from '@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen';

import type * as annolist from '@grafana/schema/dist/esm/raw/composable/annotationslist/panelcfg/x/AnnotationsListPanelCfg_types.gen';
import type * as barchart from '@grafana/schema/dist/esm/raw/composable/barchart/panelcfg/x/BarChartPanelCfg_types.gen';
import type * as bargauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as candlestick from '@grafana/schema/dist/esm/raw/composable/candlestick/panelcfg/x/CandlestickPanelCfg_types.gen';
import type * as canvas from '@grafana/schema/dist/esm/raw/composable/canvas/panelcfg/x/CanvasPanelCfg_types.gen';
import type * as dashlist from '@grafana/schema/dist/esm/raw/composable/dashboardlist/panelcfg/x/DashboardListPanelCfg_types.gen';
import type * as debug from '@grafana/schema/dist/esm/raw/composable/debug/panelcfg/x/DebugPanelCfg_types.gen';
import type * as gauge from '@grafana/schema/dist/esm/raw/composable/gauge/panelcfg/x/GaugePanelCfg_types.gen';
import type * as geomap from '@grafana/schema/dist/esm/raw/composable/geomap/panelcfg/x/GeomapPanelCfg_types.gen';
import type * as heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as histogram from '@grafana/schema/dist/esm/raw/composable/histogram/panelcfg/x/HistogramPanelCfg_types.gen';
import type * as logs from '@grafana/schema/dist/esm/raw/composable/logs/panelcfg/x/LogsPanelCfg_types.gen';
import type * as news from '@grafana/schema/dist/esm/raw/composable/news/panelcfg/x/NewsPanelCfg_types.gen';
import type * as nodegraph from '@grafana/schema/dist/esm/raw/composable/nodegraph/panelcfg/x/NodeGraphPanelCfg_types.gen';
import type * as piechart from '@grafana/schema/dist/esm/raw/composable/piechart/panelcfg/x/PieChartPanelCfg_types.gen';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as statetimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as statushistory from '@grafana/schema/dist/esm/raw/composable/statushistory/panelcfg/x/StatusHistoryPanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as text from '@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type * as trend from '@grafana/schema/dist/esm/raw/composable/trend/panelcfg/x/TrendPanelCfg_types.gen';
import type * as xychart from '@grafana/schema/dist/esm/raw/composable/xychart/panelcfg/x/XYChartPanelCfg_types.gen';

type IsAny<T> = 0 extends 1 & T ? true : false;

/**
 * The schema type as Grafana reads a dashboard's JSON:
 *  - a string enum (`LegendDisplayMode.List`) becomes the union of its values
 *    (`"list" | "table" | "hidden"`): JSON holds the value, and TypeScript
 *    refuses a string literal where a string enum is expected. Template
 *    literal types do it for any string enum without listing them: `${E}`
 *    is the union of E's values. String literal unions and `string` map to
 *    themselves; numeric enums are left alone (a number literal naming one of
 *    their members is accepted, another number is not);
 *  - every property, at every depth, is optional: Grafana fills in what a
 *    dashboard leaves out, and the schema marks required much that the
 *    editor never writes;
 *  - the result is still an object type with known properties, so an object
 *    literal checked against it still gets TypeScript's excess-property check:
 *    an unknown property is an error, at any depth;
 *  - unions (value mappings, table cell options) are mapped member by member
 *    (the conditional type distributes), so their discriminants still pick
 *    the member that the rest of the object is checked against.
 */
export type Loose<T> =
  IsAny<T> extends true
    ? T
    : T extends string
      ? `${T}`
      : T extends number | boolean | bigint | null | undefined
        ? T
        : T extends readonly (infer U)[]
          ? Loose<U>[]
          : T extends object
            ? Schema<T>
            : T;

/** An object of the schema, loosened: displayed as `Schema<TheSchemaType>` in tsc's messages. */
export type Schema<T> = { [K in keyof T]?: Loose<T[K]> };

/** The field options of a panel type that has no custom field options. */
export interface NoCustomFieldOptions {
  /** Nothing: this panel type defines no `fieldConfig.defaults.custom` property. */
  __noCustomFieldOptionsInThisPanelType?: never;
}

/** `fieldConfig.defaults` of a panel whose custom field options are `C`. */
export interface FieldDefaults<C> extends Omit<raw.FieldConfig, 'custom'> {
  custom?: C;
}

/** `fieldConfig` of a panel whose custom field options are `C`. */
export interface FieldConfigOf<C> extends Omit<raw.FieldConfigSource, 'defaults'> {
  defaults?: FieldDefaults<C>;
}

/** The schema's panel, of plugin `Type`, whose `options` are `O` and custom field options `C`. */
export interface PanelBody<Type extends string, O, C> extends Omit<raw.Panel, 'type' | 'options' | 'fieldConfig'> {
  type: Type;
  options?: O;
  fieldConfig?: FieldConfigOf<C>;
}

/** A panel of plugin `Type`, loosened (see Loose). */
export type PanelOf<Type extends string, O, C = NoCustomFieldOptions> = Loose<PanelBody<Type, O, C>>;

/** A row; the panels of a collapsed row are checked one by one like the others. */
export type RowOf = Loose<Omit<raw.RowPanel, 'panels'>> & { panels?: unknown[] };

/**
 * Panel types by plugin id, from the panel configurations @grafana/schema
 * publishes (raw/composable/<plugin>/panelcfg). A dashboard panel whose type
 * is not a key here is reported as an unknown panel type (add it here if a
 * plugin panel is installed on purpose).
 */
export interface Panels {
  row: RowOf;
  annolist: PanelOf<'annolist', annolist.Options>;
  barchart: PanelOf<'barchart', barchart.Options, barchart.FieldConfig>;
  bargauge: PanelOf<'bargauge', bargauge.Options>;
  candlestick: PanelOf<'candlestick', candlestick.Options, candlestick.FieldConfig>;
  canvas: PanelOf<'canvas', canvas.Options>;
  dashlist: PanelOf<'dashlist', dashlist.Options>;
  debug: PanelOf<'debug', debug.Options>;
  gauge: PanelOf<'gauge', gauge.Options>;
  geomap: PanelOf<'geomap', geomap.Options>;
  heatmap: PanelOf<'heatmap', heatmap.Options, heatmap.FieldConfig>;
  histogram: PanelOf<'histogram', histogram.Options, histogram.FieldConfig>;
  logs: PanelOf<'logs', logs.Options>;
  news: PanelOf<'news', news.Options>;
  nodeGraph: PanelOf<'nodeGraph', nodegraph.Options>;
  piechart: PanelOf<'piechart', piechart.Options, piechart.FieldConfig>;
  stat: PanelOf<'stat', stat.Options>;
  'state-timeline': PanelOf<'state-timeline', statetimeline.Options, statetimeline.FieldConfig>;
  'status-history': PanelOf<'status-history', statushistory.Options, statushistory.FieldConfig>;
  table: PanelOf<'table', table.Options, table.FieldConfig>;
  text: PanelOf<'text', text.Options>;
  timeseries: PanelOf<'timeseries', timeseries.Options, timeseries.FieldConfig>;
  trend: PanelOf<'trend', trend.Options, trend.FieldConfig>;
  xychart: PanelOf<'xychart', xychart.Options, xychart.FieldConfig>;
}

/**
 * Properties Grafana 13 reads and writes that the dashboard schema (v1) does
 * not list. Each is here on purpose, with where Grafana uses it; anything
 * else the schema does not know is an error.
 */
export interface QueryVariableExtras {
  /**
   * A query variable's query as text, written by Grafana's variable editor
   * next to `query` (the v2 dashboard schema has it: QueryVariableSpec.definition).
   */
  definition?: string;
}

/**
 * A Prometheus annotation query's own fields, kept at the top of the
 * annotation as the Prometheus data source's annotation editor writes them
 * (the schema leaves data-source-specific fields out; on load Grafana moves
 * expr and step into `target`, and reads the others as they are).
 */
export interface PrometheusAnnotationExtras {
  expr?: string;
  step?: string;
  titleFormat?: string;
  textFormat?: string;
  tagKeys?: string;
  useValueForTime?: boolean;
}

/** The schema's annotation query, with the Prometheus fields above. */
export interface AnnotationQuery extends SchemaAnnotationQuery, PrometheusAnnotationExtras {}

/** The schema's variable, with the query variable's definition. */
export interface VariableModel extends SchemaVariableModel, QueryVariableExtras {}

/** The schema's dashboard, its panels left out (each panel is checked on its own). */
export interface DashboardBody extends Omit<Dashboard, 'panels' | 'annotations' | 'templating'> {
  annotations?: Omit<AnnotationContainer, 'list'> & { list?: AnnotationQuery[] };
  templating?: { list?: VariableModel[] };
}

export type DashboardTop = Loose<DashboardBody> & { panels?: unknown[] };
