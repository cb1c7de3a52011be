#include <gtest/gtest.h>

#include "hooks/names.h"
#include "interp/error.h"
#include "interp/hooks.h"

using interp::act_name;

TEST(ActName, TransformerLensNames) {
  EXPECT_EQ(act_name("resid_pre", 3), "blocks.3.hook_resid_pre");
  EXPECT_EQ(act_name("resid_mid", 0), "blocks.0.hook_resid_mid");
  EXPECT_EQ(act_name("mlp_out", 1), "blocks.1.hook_mlp_out");
  EXPECT_EQ(act_name("pattern", 0), "blocks.0.attn.hook_pattern");
  EXPECT_EQ(act_name("z", 2), "blocks.2.attn.hook_z");
  EXPECT_EQ(act_name("post", 1), "blocks.1.mlp.hook_post");
  EXPECT_EQ(act_name("embed"), "hook_embed");
  EXPECT_EQ(act_name("pos_embed"), "hook_pos_embed");
  EXPECT_EQ(act_name("ln1", 1), "blocks.1.ln1.hook_normalized");
  EXPECT_EQ(act_name("ln_final"), "ln_final.hook_normalized");
}

TEST(ActName, PointLayerIsTheInverse) {
  EXPECT_EQ(interp::point_layer("blocks.11.attn.hook_result"), 11);
  EXPECT_EQ(interp::point_layer(interp::point_name(interp::PointKind::QInput, 3)), 3);
  EXPECT_EQ(interp::point_layer("hook_embed"), -1);
  EXPECT_EQ(interp::point_layer("blocks.x.hook_resid_pre"), -1);
  EXPECT_EQ(interp::point_layer("blocks.99999999999999999999.hook_resid_pre"), -1);
  EXPECT_EQ(interp::act_name("q_input", 2), "blocks.2.hook_q_input");
  EXPECT_EQ(interp::act_name("result", 0), "blocks.0.attn.hook_result");
  EXPECT_EQ(interp::act_name("mlp_in", 1), "blocks.1.hook_mlp_in");
}

TEST(ActName, NegativeLayersCountFromTheEnd) {
  EXPECT_EQ(act_name("resid_post", -1, 6), "blocks.5.hook_resid_post");
  EXPECT_EQ(act_name("q", -6, 6), "blocks.0.attn.hook_q");
  EXPECT_THROW(act_name("q", -7, 6), interp::Error);
  EXPECT_THROW(act_name("q", 6, 6), interp::Error);
  EXPECT_THROW(act_name("q", -1), interp::Error);  // unknown layer count
  EXPECT_THROW(act_name("resid_pre"), interp::Error);  // needs a layer
}

TEST(ActName, UnknownShortNameSuggests) {
  try {
    act_name("resid_pr", 0);
    FAIL();
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("closest: resid_pre"), std::string::npos) << e.what();
  }
}

TEST(NameMap, PatternsWithLayers) {
  auto tl = interp::detail::NameMap::transformer_lens();
  auto r = tl.role_of("blocks.11.attn");
  EXPECT_EQ(r.kind, interp::detail::Role::Attn);
  EXPECT_EQ(r.layer, 11);
  EXPECT_EQ(tl.role_of("blocks.1.attn.W_Q").kind, interp::detail::Role::None);
  EXPECT_EQ(tl.role_of("blocksX3").kind, interp::detail::Role::None);
  EXPECT_EQ(tl.role_of("ln_final").kind, interp::detail::Role::LnFinal);
}

TEST(Closest, EditDistance) {
  auto c = interp::detail::closest_names("blocks.0.hook_z", {"blocks.0.attn.hook_z", "hook_embed", "blocks.0.hook_q"}, 2);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0], "blocks.0.hook_q");
}

TEST(Filters, ExactAndRegex) {
  auto exact = interp::names_filter(std::vector<std::string>{"a", "b"});
  EXPECT_TRUE(exact("a"));
  EXPECT_FALSE(exact("ab"));
  auto re = interp::names_filter("resid_(pre|post)");
  EXPECT_TRUE(re("blocks.0.hook_resid_pre"));
  EXPECT_FALSE(re("blocks.0.hook_resid_mid"));
  EXPECT_THROW(interp::names_filter("(unclosed"), interp::Error);
}
