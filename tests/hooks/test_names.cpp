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

TEST(ActName, FamilyPoints) {
  EXPECT_EQ(interp::act_name("rot_q", 1), "blocks.1.attn.hook_rot_q");
  EXPECT_EQ(interp::act_name("rot_k", 0), "blocks.0.attn.hook_rot_k");
  EXPECT_EQ(interp::act_name("pre_linear", 2), "blocks.2.mlp.hook_pre_linear");
  EXPECT_EQ(interp::act_name("ln1_scale", 0), "blocks.0.ln1.hook_scale");
  EXPECT_EQ(interp::act_name("ln2_scale", 3), "blocks.3.ln2.hook_scale");
  EXPECT_EQ(interp::act_name("ln_final_scale"), "ln_final.hook_scale");
}

// The shipped maps are chosen by how many module paths they map, and say so.
TEST(NameMap, DetectsTheFamilyFromModulePaths) {
  using interp::detail::NameMap;
  using interp::detail::Role;
  std::vector<std::string> llama = {"model", "model.embed_tokens", "model.layers", "model.layers.0",
                                    "model.layers.0.self_attn", "model.layers.0.self_attn.q_proj",
                                    "model.layers.0.mlp", "model.layers.0.input_layernorm",
                                    "model.layers.0.post_attention_layernorm", "model.norm", "lm_head"};
  auto [map, why] = NameMap::detect(llama);
  EXPECT_EQ(map.role_of("model.layers.0.self_attn").kind, Role::Attn);
  EXPECT_EQ(map.role_of("model.layers.0.self_attn").layer, 0);
  EXPECT_EQ(map.role_of("model.norm").kind, Role::LnFinal);
  EXPECT_NE(why.find("'llama'"), std::string::npos) << why;
  EXPECT_NE(why.find("maps 8 of the model's 11 module paths"), std::string::npos) << why;

  std::vector<std::string> neox = {"gpt_neox", "gpt_neox.embed_in", "gpt_neox.layers.0", "gpt_neox.layers.0.attention",
                                   "gpt_neox.layers.0.mlp", "gpt_neox.final_layer_norm", "embed_out"};
  auto [nmap, nwhy] = NameMap::detect(neox);
  EXPECT_EQ(nmap.role_of("gpt_neox.layers.0.attention").kind, Role::Attn);
  EXPECT_NE(nwhy.find("'neox'"), std::string::npos) << nwhy;

  std::vector<std::string> gpt2 = {"transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.0.attn",
                                   "transformer.ln_f", "lm_head"};
  EXPECT_EQ(NameMap::detect(gpt2).first.role_of("transformer.wpe").kind, Role::PosEmbed);

  // nothing known: TransformerLens's names, and a hint
  auto [tl, twhy] = NameMap::detect({"encoder", "decoder.layer.0"});
  EXPECT_EQ(tl.role_of("blocks.0.attn").kind, Role::Attn);
  EXPECT_NE(twhy.find("pass --name-map"), std::string::npos) << twhy;

  // --name-map VALUE: a shipped map by name, else a file; a bare unknown word says what exists
  EXPECT_EQ(NameMap::from_option("neox").role_of("embed_out").kind, Role::Unembed);
  try {
    NameMap::from_option("mistral");
    ADD_FAILURE() << "no error";
  } catch (const interp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpt2, llama, neox"), std::string::npos) << e.what();
  }
}
