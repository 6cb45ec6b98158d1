// Lint: typescript-eslint's type-aware rules, plus the one dependency rule
// DESIGN.md states: inbound and outbound meet only through the queue.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'data/', 'certs/', 'dist/'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['*.js', 'bin/*.js'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/inbound/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/outbound/**'], message: 'inbound never imports outbound: they meet through the queue (DESIGN.md).' }] }],
    },
  },
  {
    files: ['src/outbound/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/inbound/**'], message: 'outbound never imports inbound: they meet through the queue (DESIGN.md).' }] }],
    },
  },
  {
    files: ['test/**', 'bench/**'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
);
