// interp/report.h: pictures of patching results: an SVG heatmap and a self-contained HTML page.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "interp/patch.h"

namespace interp {

// An SVG heatmap of a result's normalized values (values where the baselines agree): rows are layers
// (x heads for three axes), columns positions (labelled with `pos_labels`) or heads; a diverging
// colour scale centred on 0 with a legend; each cell's <title> holds its label and both numbers.
std::string heatmap_svg(const PatchResult& result, const std::vector<std::string>& pos_labels,
                        const std::string& title);
// A self-contained page showing the heatmap, the baselines, the run's statistics and the top sites.
std::string report_html(const PatchResult& result, const std::string& svg, const std::string& title,
                        const std::vector<std::pair<std::string, std::string>>& facts);

}  // namespace interp
